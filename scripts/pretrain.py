"""Contrastive pretraining with SEC: ``python scripts/pretrain.py --config configs/simclr_fmnist.yaml [key=value ...]``.

Several processes: ``accelerate launch --num_processes N scripts/pretrain.py ...`` (GPUs), or
``torchrun --nproc_per_node N scripts/pretrain.py ...`` (also on CPUs, with gloo).
"""

from sslsec.cli import pretrain_main

if __name__ == "__main__":
    pretrain_main()
