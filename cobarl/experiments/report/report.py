"""Turn the runs of a comparison into ``summary.json``, ``metrics.csv``, PNG plots and ``report.md``.

The numbers come from `cobarl.experiments.report.report_stats`, the figures from
`cobarl.experiments.report.figures`, the prose from `cobarl.experiments.report.markdown`. Every file is written
atomically (`cobarl.io.write_atomic`), so a reader never sees half a report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cobarl.experiments.simulation import sim_trust
from cobarl.experiments.comparison.runs import CompareOptions, RunResult
from cobarl.experiments.report.figures import PLOTS, plot_all, plot_grid
from cobarl.experiments.report.markdown import report_markdown
from cobarl.experiments.report.report_stats import _clean, metrics_csv, summarise_comparison
from cobarl.experiments.simulation.sim_vs_real import simulator_check
from cobarl.experiments.report.summary_io import write_summary
from cobarl.io import write_text

FILES = ("summary.json", "metrics.csv", "report.md")


def write_report(
    runs: Sequence[RunResult], options: CompareOptions, out_dir: str | os.PathLike, *, command: str = "",
    plots: bool = True, incomplete: dict[str, Any] | None = None, against: tuple[str, dict] | None = None,
    provenance: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write every report file into ``out_dir`` (created if needed); returns the summary.

    ``incomplete``: see `summarise_comparison` (a comparison stopped early reports what had finished).
    ``against``: ``(folder, summary)`` of a real comparison this simulated one mirrors; the
    simulator check (`cobarl.experiments.simulation.sim_vs_real`) goes into summary.json and report.md.
    ``provenance``: per run, reused or run now (`cobarl.experiments.comparison.run_store.RunStore.provenance`).
    A report already in ``out`` (of a comparison this one continues) is replaced whole, its plots too.
    A simulated comparison records ``accuracy_shown`` (`cobarl.experiments.simulation.sim_trust.shows_accuracy`);
    without it the accuracy figure is not drawn.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise_comparison(runs, options, command=command, incomplete=incomplete)
    shown = sim_trust.shows_accuracy(options.backend, options.sim_accuracy)
    if options.backend == "simulated":  # report.md and the console read it (sim_trust)
        summary["accuracy_shown"] = shown
    if against is not None:
        summary["simulator_check"] = _clean(simulator_check(summary, against[1]))
        summary["simulator_check"]["real_report"] = against[0]
    if provenance is not None:
        summary["runs"] = provenance
    write_text(out / "metrics.csv", metrics_csv(runs))
    write_summary(out / "summary.json", summary)  # checked: it reads back whole (summary_io)
    for old in [*PLOTS, *(p.name for p in out.glob("grid_*.png"))]:  # the replaced report's, out of date now
        (out / old).unlink(missing_ok=True)
    written = plot_all(runs, options, out, accuracy=shown) if plots else []
    if plots and summary.get("grid") and summary["grid"]["chosen"] is not None:
        written = plot_grid(summary["grid"], out) + written
    write_text(out / "report.md", report_markdown(summary, written))
    return summary
