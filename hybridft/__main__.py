"""``python -m hybridft``: the ``hybridft`` command (`hybridft.cli`)."""

import sys

from hybridft.cli import main

if __name__ == "__main__":
    sys.exit(main())
