"""The metric-learning table of the SEC paper at any scale: ``python scripts/metric_study.py --config
configs/dml_fmnist.yaml --losses triplet,npair --seeds 3 [key=value ...]``; see :mod:`sslsec.analysis.metric_study`."""

from sslsec.cli import metric_study_main

if __name__ == "__main__":
    metric_study_main()
