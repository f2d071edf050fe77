"""The real back-end of ``cobarl compare``: one ``cobarl train`` run per (strategy, seed).

Each run is built by the same `cobarl.train.config.make_config` as the ``cobarl train`` command
line, so a strategy option that ``compare`` accepts is one that ``train`` accepts, and it logs the
metric names of :mod:`cobarl.metrics`, as the simulator does.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path


def run_training(options: dict) -> dict:
    """One run: ``{"rows": [per-step metrics], "summary": RunSummary as a dict}``.

    ``options`` are `TrainConfig` option values, flat as on the command line (``strategy`` is the
    strategy name, ``kappa``, ``max_rounds``, ... its policy's options).
    """
    from cobarl.train.config import make_config
    from cobarl.train.metrics_log import METRICS_FILE, read_metrics
    from cobarl.train.run import run
    from cobarl.train.rundir import RUNS_ROOT

    options = dict(options)
    # Parallel workers may start runs within the same second: give each its own directory.
    options.setdefault(
        "output_dir",
        str(RUNS_ROOT / f"real-{options.get('allocator', 'coba')}-seed{options.get('seed', 0)}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"),
    )
    options.update(options.pop("allocator_overrides", None) or {})
    summary = run(make_config(options), log=lambda _: None)
    rows = read_metrics(Path(summary.run_dir) / METRICS_FILE)
    if rows:  # the final evaluation runs after the last logged step
        rows[-1].update(summary.accuracy_after)
    return {"rows": rows, "summary": asdict(summary)}
