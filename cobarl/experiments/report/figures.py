"""The PNG figures of a comparison's report: per-strategy curves over seeds (mean and 95 % CI band)
and, for a sweep, validation accuracy per option and the two-option heat map."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from cobarl import metrics as M
from cobarl.experiments.comparison.grid import SELECTION_METRIC
from cobarl.experiments.comparison.runs import CompareOptions, RunResult
from cobarl.experiments.comparison.specs import format_value
from cobarl.experiments.report.report_stats import _series, accuracy_key, rollout_curve
from cobarl.experiments.simulation.simulator import PASS_RATE_BINS, PHASES
from cobarl.io import write_atomic
from cobarl.stats import BUCKETS

PLOTS = (
    "accuracy_vs_rollouts.png",
    "effective_ratio.png",
    "capability.png",
    "budget_vs_pass_rate.png",
    "transitions.png",
)
ACCURACY_PLOT = PLOTS[0]
"""The one figure of accuracy (left out where a simulated report withholds it)."""
GRID_HEATMAP = "grid_heatmap.png"
"""Validation accuracy over the two options of a two-option sweep."""


def grid_plot_name(option: str) -> str:
    """The line plot of a sweep's validation accuracy against ``option``."""
    return f"grid_{option}.png"




def values_text(values: dict[str, Any]) -> str:
    """``option=value, ...`` of a sweep configuration."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())


def _smooth(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing moving average over ``w`` steps (NaN-aware; the first steps average what exists)."""
    if w <= 1 or x.size == 0:
        return x
    ok = np.isfinite(x)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    k = np.concatenate([[0], np.cumsum(ok)])
    lo = np.maximum(np.arange(1, x.size + 1) - w, 0)
    hi = np.arange(1, x.size + 1)
    n = k[hi] - k[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (c[hi] - c[lo]) / np.maximum(n, 1), np.nan)


def _band(runs: Sequence[RunResult], key: str, smooth: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95 % CI half-width over seeds, step by step (each seed smoothed first; runs
    truncated to the shortest). The half-width is 0 with fewer than 3 seeds, where a t interval
    is too wide to draw."""
    series = [_smooth(_series(r, key), smooth) for r in runs]
    n = min(s.size for s in series)
    a = np.stack([s[:n] for s in series])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps (sparse real-backend evals)
        mean = np.nanmean(a, axis=0)
        k = np.isfinite(a).sum(axis=0)
        sd = np.nanstd(a, axis=0, ddof=1) if a.shape[0] > 1 else np.zeros(n)
        half = np.where(k > 2, stats.t.ppf(0.975, np.maximum(k - 1, 1)) * sd / np.sqrt(np.maximum(k, 1)), 0.0)
    return mean, np.nan_to_num(half), np.arange(1, n + 1)


def _band_against(runs: Sequence[RunResult], key: str, smooth: int = 1, points: int = 200):
    """`_band` against cumulative rollouts generated instead of the step: each seed is
    interpolated onto one grid up to the smallest final x, so runs that take different numbers of steps
    for the same x (policies that generate more per step) are averaged at the same x."""
    curves = [rollout_curve(r, key, lambda y: _smooth(y, smooth)) for r in runs]
    if any(x.size == 0 for x, _ in curves):  # a run without this curve: nothing to draw for the arm
        return np.full(1, np.nan), np.zeros(1), np.full(1, np.nan)
    grid = np.linspace(max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves), points)
    a = np.stack([np.interp(grid, x, y) for x, y in curves])
    mean = a.mean(axis=0)
    half = (stats.t.ppf(0.975, a.shape[0] - 1) * a.std(axis=0, ddof=1) / np.sqrt(a.shape[0]) if a.shape[0] > 2
            else np.zeros(points))
    return mean, half, grid


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


@dataclass(frozen=True)
class _PlotData:
    """What every figure draws from: the runs with rows per strategy (in strategy order), a color
    per strategy and the moving-average window for per-step curves."""

    by: dict[str, list[RunResult]]
    colors: dict[str, Any]
    smooth: int
    accuracy: str | None

    def has(self, key: str) -> bool:
        return any(key in row for runs in self.by.values() for run in runs for row in run.rows)

    def with_summary(self, key: str) -> list[str]:
        """Strategies whose every run's summary holds ``key`` (not None)."""
        return [label for label, runs in self.by.items() if runs and all(r.summary.get(key) is not None for r in runs)]


def _plot_data(runs: Sequence[RunResult], options: CompareOptions) -> _PlotData:
    by = {s.label: [r for r in runs if r.label == s.label and r.rows] for s in options.strategies}
    by = {label: rs for label, rs in by.items() if rs}
    return _PlotData(by=by, colors=dict(zip(by, _colors(len(by)))), smooth=max(1, options.steps // 40),
                     accuracy=accuracy_key(runs))


def _band_lines(ax, data: _PlotData, key: str, *, smooth: int = 1, against_rollouts: bool = False) -> None:
    """One line per strategy: the mean of ``key`` over seeds with its 95 % CI band, against the
    step or against cumulative rollouts generated."""
    for label, runs in data.by.items():
        mean, half, x = _band_against(runs, key, smooth) if against_rollouts else _band(runs, key, smooth)
        ok = np.isfinite(mean) & np.isfinite(x)  # real-backend evals are sparse: skip steps without one
        ax.plot(x[ok], mean[ok], color=data.colors[label], label=label, lw=1.3)
        ax.fill_between(x[ok], (mean - half)[ok], (mean + half)[ok], color=data.colors[label], alpha=0.15, lw=0)
    ax.grid(alpha=0.3)


def _accuracy_figure(plt, data: _PlotData):
    keys = [k for k in (data.accuracy, M.EVAL_TRAIN_SOLVED) if k and data.has(k)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.2), squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], keys):
        _band_lines(ax, data, key, against_rollouts=True)
        ax.set_xlabel("rollouts generated (cumulative)")
        ax.set_ylabel(key)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Accuracy vs rollouts (mean over seeds, 95 % CI band)")
    return fig


def _effective_ratio_figure(plt, data: _PlotData):
    if not data.has(M.ROLLOUT_EFFECTIVE_RATIO):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    _band_lines(ax, data, M.ROLLOUT_EFFECTIVE_RATIO, smooth=data.smooth)
    ax.set_xlabel("step")
    ax.set_ylabel("share of rollouts in mixed groups")
    ax.set_title(f"Effective-gradient ratio (moving average over {data.smooth} steps)")
    ax.legend(fontsize=7)
    return fig


_CAPABILITY = {M.CAPABILITY_ALPHA: "alpha_t", M.CAPABILITY_BETA: "beta_t", M.CAPABILITY_FAILURE_RATE: "failure rate F_t"}


def _capability_figure(plt, data: _PlotData):
    keys = [k for k in _CAPABILITY if data.has(k)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], keys):
        _band_lines(ax, data, key, smooth=data.smooth)
        ax.set_xlabel("step")
        ax.set_title(f"{_CAPABILITY[key]} (moving average over {data.smooth} steps)", fontsize=10)
    axes[0][0].legend(fontsize=7)
    return fig


def _budget_figure(plt, data: _PlotData):
    """Mean budget by estimated pass rate, one panel per third of training, pooled over seeds."""
    labels = data.with_summary("budget_by_pass_rate")
    if not labels:
        return None
    fig, axes = plt.subplots(1, len(PHASES), figsize=(5.2 * len(PHASES), 4), sharey=True, layout="constrained")
    x = np.arange(len(PASS_RATE_BINS))
    for label in labels:
        total = np.sum([r.summary["budget_by_pass_rate"]["sum"] for r in data.by[label]], axis=0)
        count = np.sum([r.summary["budget_by_pass_rate"]["count"] for r in data.by[label]], axis=0)
        for k, ax in enumerate(axes):
            ok = count[k] > 0
            ax.plot(x[ok], total[k][ok] / count[k][ok], marker="o", ms=3, color=data.colors[label], label=label, lw=1.2)
    for k, ax in enumerate(axes):
        ax.set_xticks(x, PASS_RATE_BINS, rotation=60, fontsize=7)
        ax.set_xlabel("estimated pass rate of the prompt (previous appearance)")
        ax.set_title(f"{PHASES[k]} third of training")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean rollouts given")
    axes[0].legend(fontsize=7)
    return fig


def _transitions_figure(plt, data: _PlotData):
    """One heat map per strategy: % of each initial difficulty bucket ending in each final one."""
    labels = data.with_summary("transitions")
    if not labels:
        return None
    cols = min(4, len(labels))
    rows = math.ceil(len(labels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    short = ["x-hard", "hard", "medium", "easy", "x-easy"]
    for ax, label in zip(axes.flat, labels):
        total = np.sum([r.summary["transitions"] for r in data.by[label]], axis=0).astype(np.float64)
        pct = 100 * total / np.maximum(total.sum(axis=1, keepdims=True), 1)
        ax.imshow(pct, vmin=0, vmax=100, cmap="Blues")
        for (i, j), value in np.ndenumerate(pct):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7, color="white" if value > 60 else "black")
        ax.set_xticks(range(len(BUCKETS)), short, rotation=45, fontsize=7)
        ax.set_yticks(range(len(BUCKETS)), short, fontsize=7)
        ax.set_title(label, fontsize=9)
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    fig.supxlabel("final bucket")
    fig.supylabel("initial bucket")
    fig.suptitle("Difficulty transitions of train prompts, % of each initial bucket (cf. CoBA-RL Fig. 7)")
    return fig


def _grid_line_figure(plt, grid: dict[str, Any], option: str):
    """Validation accuracy (mean and 95 % CI over seeds) against one option's values, the other
    options at the best grid configuration's values; the base configuration as a dashed line."""
    anchor = grid["plot_anchor"]
    if anchor is None:
        return None
    fixed = {k: v for k, v in grid["configs"][anchor]["values"].items() if k != option}
    xs, means, halves, labels = [], [], [], []
    for k, value in enumerate(grid["options"][option]):
        label = next((lab for lab, e in grid["configs"].items() if e["on_grid"] and e["values"][option] == value
                      and all(e["values"][o] == v for o, v in fixed.items())), None)
        if label is None:  # an arm that did not finish (interrupted sweep)
            continue
        acc = grid["configs"][label]["validation_accuracy"]
        xs.append(k)
        means.append(acc["mean"])
        halves.append(acc["half_width"] if acc["half_width"] is not None else 0.0)
        labels.append(label)
    fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
    m, h = np.asarray(means, dtype=np.float64), np.asarray(halves, dtype=np.float64)
    ax.plot(xs, m, marker="o", color="C0", lw=1.4, label="validation accuracy (mean, 95 % CI)")
    ax.fill_between(xs, m - h, m + h, color="C0", alpha=0.18, lw=0)
    if anchor in labels:
        k = labels.index(anchor)
        ax.plot([xs[k]], [m[k]], marker="*", ms=14, color="C3", ls="none",
                label="chosen" if anchor == grid["chosen"] else "best grid point")
    base = grid["configs"].get(grid["base"])
    if base is not None and not base["on_grid"]:
        ax.axhline(base["validation_accuracy"]["mean"], color="gray", ls="--", lw=1, label=f"base ({grid['base']})")
    values = grid["options"][option]
    ax.set_xticks(range(len(values)), [format_value(v) for v in values])
    ax.set_xlabel(option)
    ax.set_ylabel(SELECTION_METRIC)
    others = values_text(fixed)
    ax.set_title(f"Validation accuracy vs {option}" + (f"\n({others})" if others else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _grid_heatmap_figure(plt, grid: dict[str, Any]):
    """Mean validation accuracy of every (option 1, option 2) cell of a two-option sweep."""
    (o1, v1), (o2, v2) = grid["options"].items()
    cell = np.full((len(v1), len(v2)), np.nan)
    where: dict[str, tuple[int, int]] = {}
    for label, e in grid["configs"].items():
        if e["on_grid"] and e["validation_accuracy"]["mean"] is not None:
            i, j = v1.index(e["values"][o1]), v2.index(e["values"][o2])
            cell[i, j] = e["validation_accuracy"]["mean"]
            where[label] = (i, j)
    fig, ax = plt.subplots(figsize=(1.2 * len(v2) + 3, 0.9 * len(v1) + 2.2), layout="constrained")
    im = ax.imshow(cell, cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(cell):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.4f}", ha="center", va="center", fontsize=8,
                    color="black" if value > np.nanmean(cell) else "white")
    if grid["chosen"] in where:
        i, j = where[grid["chosen"]]
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    ax.set_xticks(range(len(v2)), [format_value(v) for v in v2])
    ax.set_yticks(range(len(v1)), [format_value(v) for v in v1])
    ax.set_xlabel(o2)
    ax.set_ylabel(o1)
    fig.colorbar(im, ax=ax, label=f"{SELECTION_METRIC} (mean over seeds)")
    ax.set_title("Validation accuracy (red box: chosen)", fontsize=10)
    return fig


def plot_grid(grid: dict[str, Any], out: Path) -> list[str]:
    """The sweep's figures: one line plot per option, and a heat map when there are exactly two."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {grid_plot_name(o): (lambda o=o: _grid_line_figure(plt, grid, o)) for o in grid["options"]}
    if len(grid["options"]) == 2:
        figures[GRID_HEATMAP] = lambda: _grid_heatmap_figure(plt, grid)
    return _save_figures(plt, figures, out)


def _save_figures(plt, figures: dict[str, Callable], out: Path) -> list[str]:
    written = []
    for name, draw in figures.items():
        fig = draw()
        if fig is None:
            continue
        write_atomic(Path(out) / name, lambda f, fig=fig: fig.savefig(f, format="png", dpi=100), binary=True)
        plt.close(fig)
        written.append(name)
    return written


_FIGURES: dict[str, Callable] = dict(
    zip(PLOTS, (_accuracy_figure, _effective_ratio_figure, _capability_figure, _budget_figure, _transitions_figure))
)


def plot_all(runs: Sequence[RunResult], options: CompareOptions, out: Path, *, accuracy: bool = True) -> list[str]:
    """Write the PNG plots; returns the file names written (plots without data are skipped, and the
    accuracy plot without ``accuracy``: a simulated report that withholds accuracy, `sim_trust`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _plot_data(runs, options)
    figures = {name: draw for name, draw in _FIGURES.items() if accuracy or name != ACCURACY_PLOT}
    return _save_figures(plt, {name: (lambda draw=draw: draw(plt, data)) for name, draw in figures.items()}, out)

