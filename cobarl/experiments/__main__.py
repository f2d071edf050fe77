"""``python -m cobarl.experiments``: the same as ``cobarl compare``."""

from cobarl.experiments.comparison.cli import main

raise SystemExit(main(prog="python -m cobarl.experiments"))
