"""``python -m gsn_metric ref.png dist.png``: see ``gsn_metric.cli``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
