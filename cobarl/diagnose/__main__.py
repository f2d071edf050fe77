"""``python -m cobarl.diagnose``: same as ``cobarl diagnose``."""

import sys

from cobarl.diagnose.cli import main

if __name__ == "__main__":
    sys.exit(main())
