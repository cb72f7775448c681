"""Linear probe and kNN of a frozen backbone: ``python scripts/linear_probe.py --run RUN_DIR [key=value ...]``."""

from sslsec.cli import linear_probe_main

if __name__ == "__main__":
    linear_probe_main()
