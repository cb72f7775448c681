"""Rewrite the README's figure blocks from the main jobs' runs: ``python scripts/readme_figures.py [--check]``."""

import sys

from sslsec.analysis.readme_figures import main

if __name__ == "__main__":
    sys.exit(main())
