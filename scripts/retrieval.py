"""Retrieval (Recall@K, MAP@R, NMI) of a frozen backbone: ``python scripts/retrieval.py --run RUN_DIR``."""

from sslsec.cli import retrieval_main

if __name__ == "__main__":
    retrieval_main()
