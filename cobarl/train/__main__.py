"""``python -m cobarl.train``: same as ``cobarl train``."""

import sys

from cobarl.train.cli import main

sys.exit(main())
