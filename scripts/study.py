"""The SEC study: ``python scripts/study.py --config configs/simclr_fmnist.yaml --variants none,sec,sec_ema,l2
--seeds 3 loss.sec_weight=1.0 [key=value ...]``; see :mod:`sslsec.analysis.study`.

Several processes: ``accelerate launch --num_processes N scripts/study.py ...`` or
``torchrun --nproc_per_node N scripts/study.py ...``; only the main process writes the study files.
"""

from sslsec.cli import study_main

if __name__ == "__main__":
    study_main()
