"""Face verification (accuracy, VAL@FAR, insightface's protocol) of a frozen backbone:
``python scripts/verification.py --run RUN_DIR``."""

from sslsec.cli import verification_main

if __name__ == "__main__":
    verification_main()
