"""``python -m cobarl.evaluate``: same as ``cobarl eval``."""

import sys

from cobarl.evaluate.cli import main

if __name__ == "__main__":
    sys.exit(main())
