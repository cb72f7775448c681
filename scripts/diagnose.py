"""Projection-norm and pair-cosine diagnostics of a run: ``python scripts/diagnose.py --run RUN_DIR``."""

from sslsec.cli import diagnose_main

if __name__ == "__main__":
    diagnose_main()
