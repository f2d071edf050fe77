"""Turn the runs of a comparison into ``summary.json``, ``metrics.csv``, PNG plots and ``report.md``.

Every file is written atomically (`cobarl.io.write_atomic`), so a reader never sees half a report. Numbers across seeds are ``mean`` with a 95 % Student-t
confidence interval; gaps against the baseline are *paired* (same seed, same task, same prompt
order and, in the simulator, the same random draws), so their intervals are per-seed differences.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from cobarl import metrics as M
from cobarl.experiments.compare import (
    SELECTION_METRIC,
    CompareOptions,
    RunResult,
    allocator_settings,
    effective_allocator,
    format_value,
)
from cobarl.io import write_atomic, write_text
from cobarl.experiments.sim_vs_real import simulator_check
from cobarl.experiments.simulator import PASS_RATE_BINS, PHASES
from cobarl.stats import BUCKETS

ACCURACY_KEYS = (M.EVAL_HELDOUT_ACCURACY,)
FILES = ("summary.json", "metrics.csv", "report.md")
PLOTS = (
    "accuracy_vs_rollouts.png",
    "effective_ratio.png",
    "capability.png",
    "budget_vs_pass_rate.png",
    "transitions.png",
)
GRID_HEATMAP = "grid_heatmap.png"
"""Validation accuracy over the two options of a two-option sweep."""


def grid_plot_name(option: str) -> str:
    """The line plot of a sweep's validation accuracy against ``option``."""
    return f"grid_{option}.png"


# --- statistics ----------------------------------------------------------------------------------


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean and Student-t confidence interval of the finite values (interval None for n < 2).

    >>> r = mean_ci([1.0, 2.0, 3.0]); r["mean"], round(r["half_width"], 3)
    (2.0, 2.484)
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = int(v.size)
    mean = float(v.mean()) if n else math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return {"mean": mean, "ci95": [mean - half, mean + half], "half_width": half, "n": n, "values": v.tolist()}


def _series(run: RunResult, key: str) -> np.ndarray:
    return np.array([float(r.get(key, math.nan)) if r.get(key) is not None else math.nan for r in run.rows])


def accuracy_key(runs: Sequence[RunResult]) -> str | None:
    for key in ACCURACY_KEYS:
        if any(key in r for run in runs for r in run.rows):
            return key
    return None


def _final(run: RunResult, key: str) -> float:
    s = _series(run, key)
    s = s[np.isfinite(s)]
    return float(s[-1]) if s.size else math.nan


def _rollouts_to(run: RunResult, key: str, target: float) -> float:
    acc, roll = _series(run, key), _series(run, "rollouts")
    hit = np.flatnonzero(np.isfinite(acc) & (acc >= target))
    return float(roll[hit[0]]) if hit.size else math.nan


def summarise(runs: Sequence[RunResult], options: CompareOptions, *, command: str = "",
              incomplete: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-strategy means and CIs, and paired gaps against the baseline; JSON-ready.

    ``incomplete``: for a comparison stopped early, what finished and what is missing (kept as is
    under the same key, and said at the top of report.md).
    """
    by = {s.label: [r for r in runs if r.label == s.label] for s in options.strategies}
    acc = accuracy_key(runs)
    # *rollouts to target*: --target-accuracy when given, else the baseline's final accuracy on the
    # same seed ("rollouts to reach uniform's final accuracy"): a weaker seed is measured against its
    # own baseline, not against the other seeds' mean
    targets = {r.seed: _final(r, acc) for r in by[options.baseline_label]} if acc else {}
    per_run = {label: [_run_metrics(r, acc, options.target_accuracy if options.target_accuracy is not None
                                    else targets.get(r.seed)) for r in rs] for label, rs in by.items()}
    summary = {
        "command": command,
        "backend": options.backend,
        "seeds": list(options.seeds),
        "steps": options.steps,
        "prompts_per_step": options.prompts_per_step,
        "rollouts_per_prompt": options.rollouts_per_prompt,
        "budget_multiplier": options.budget_multiplier,
        "budget_per_step": options.prompts_per_step * options.rollouts_per_prompt * options.budget_multiplier,
        "simulator": asdict(options.sim) if options.backend == "simulated" else None,
        "accuracy_metric": acc,
        "baseline": options.baseline_label,
        "target_accuracy": options.target_accuracy,  # None: per seed, the baseline's final accuracy
        "baseline_final_by_seed": {str(seed): t for seed, t in targets.items()},
        "strategies": {s.label: _strategy_entry(s, options, by[s.label], per_run[s.label]) for s in options.strategies},
        "gaps_vs_baseline": _gaps(by, per_run, options.baseline_label),
    }
    if options.grid is not None:
        summary["grid"] = grid_summary(runs, options)
    if incomplete is not None:
        summary["incomplete"] = incomplete
    return _clean(summary)


def _number(v: Any) -> float:
    return math.nan if v is None else float(v)  # 0.0 is an accuracy, not a missing one


def _run_metrics(run: RunResult, acc: str | None, target: float | None) -> dict[str, float]:
    eff = _series(run, M.ROLLOUT_EFFECTIVE_RATIO)
    has_eff = bool(np.isfinite(eff).any())
    return {
        "initial_heldout_accuracy": _number(run.summary.get(M.SUMMARY_INITIAL_ACCURACY)),
        "final_heldout_accuracy": _final(run, acc) if acc else math.nan,
        # The real back-end also measures greedy accuracy (the simulator has no decoding).
        "final_heldout_greedy_accuracy": _final(run, M.EVAL_HELDOUT_GREEDY),
        "final_train_solved": _final(run, M.EVAL_TRAIN_SOLVED),
        "final_train_accuracy": _final(run, M.EVAL_TRAIN_ACCURACY),
        "effective_ratio": float(np.nanmean(eff)) if has_eff else math.nan,
        "effective_ratio_last_third": float(np.nanmean(eff[2 * eff.size // 3 :])) if has_eff else math.nan,
        "rollouts": _final(run, "rollouts"),
        "rollouts_to_target": _rollouts_to(run, acc, target) if acc and target is not None else math.nan,
    }


def _strategy_entry(spec, options: CompareOptions, runs: list[RunResult], metrics: list[dict]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "description": spec.describe(),
        "allocator": spec.strategy if isinstance(spec.strategy, str) else getattr(spec.strategy, "__name__", "callable"),
        "overrides": spec.overrides,
        "budget_multiplier": spec.budget_multiplier * options.budget_multiplier,
        # every allocator setting the arm ran with (what --against mirrors on the simulator)
        "allocator_config": allocator_settings(effective_allocator(spec, options)),
        "seeds": [r.seed for r in runs],
    }
    for key in metrics[0] if metrics else ():
        entry[key] = mean_ci([m[key] for m in metrics])
    if metrics:
        entry["rollouts_to_target"]["reached"] = int(sum(math.isfinite(m["rollouts_to_target"]) for m in metrics))
        entry["rollouts_to_target"]["runs"] = len(metrics)
    # real runs have them only with cobarl train --transitions (None otherwise)
    trans = [np.asarray(r.summary["transitions"], dtype=np.float64) for r in runs if r.summary.get("transitions")]
    if trans:
        total = np.sum(trans, axis=0)
        entry["transitions_percent"] = (100 * total / np.maximum(total.sum(axis=1, keepdims=True), 1)).round(2).tolist()
        entry["transitions_initial_counts"] = total.sum(axis=1).astype(int).tolist()
    return entry


def _gaps(by: dict[str, list[RunResult]], per_run: dict[str, list[dict]], base: str) -> dict[str, Any]:
    """Per-seed differences against the baseline, for the seeds both ran."""
    gaps: dict[str, Any] = {}
    base_by_seed = {r.seed: m for r, m in zip(by[base], per_run[base])}
    for label in by:
        pairs = [(m, base_by_seed[r.seed]) for r, m in zip(by[label], per_run[label]) if r.seed in base_by_seed]
        if label == base or not pairs:
            continue
        gaps[label] = {
            "final_heldout_accuracy": mean_ci([a["final_heldout_accuracy"] - b["final_heldout_accuracy"] for a, b in pairs]),
            "final_heldout_greedy_accuracy": mean_ci(
                [a["final_heldout_greedy_accuracy"] - b["final_heldout_greedy_accuracy"] for a, b in pairs]
            ),
            "final_train_solved": mean_ci([a["final_train_solved"] - b["final_train_solved"] for a, b in pairs]),
            "effective_ratio": mean_ci([a["effective_ratio"] - b["effective_ratio"] for a, b in pairs]),
            "effective_ratio_relative_percent": mean_ci(
                [100 * (a["effective_ratio"] / b["effective_ratio"] - 1) for a, b in pairs]
            ),
            "rollouts_ratio": mean_ci([a["rollouts"] / b["rollouts"] for a, b in pairs]),
        }
    return gaps


def grid_summary(runs: Sequence[RunResult], options: CompareOptions) -> dict[str, Any]:
    """A sweep's table and its choice: the configuration with the highest mean final
    validation accuracy (`SELECTION_METRIC`) over seeds; ties go to the earlier arm (the base first
    when it is an extra arm). Held-out accuracy is reported per configuration but never used to
    choose. Gaps against the base configuration are paired by seed.
    """
    grid = options.grid
    assert grid is not None
    by = {label: [r for r in runs if r.label == label] for label in grid.points}
    by = {label: rs for label, rs in by.items() if rs}
    val = {label: {r.seed: _final(r, SELECTION_METRIC) for r in rs} for label, rs in by.items()}
    held = {label: {r.seed: _final(r, M.EVAL_HELDOUT_ACCURACY) for r in rs} for label, rs in by.items()}
    base = grid.base if grid.base in by else None
    configs: dict[str, dict[str, Any]] = {}
    for label in by:
        entry: dict[str, Any] = {
            "values": grid.points[label],
            "on_grid": label in grid.on_grid,
            "is_base": label == grid.base,
            "seeds": sorted(val[label]),
            "validation_accuracy": mean_ci(list(val[label].values())),
            "heldout_accuracy": mean_ci(list(held[label].values())),
        }
        if base is not None:
            seeds = [sd for sd in val[label] if sd in val[base]]
            entry["validation_gap_vs_base"] = mean_ci([val[label][sd] - val[base][sd] for sd in seeds])
            entry["heldout_gap_vs_base"] = mean_ci([held[label][sd] - held[base][sd] for sd in seeds])
        configs[label] = entry
    ranked = sorted((label for label in configs if math.isfinite(configs[label]["validation_accuracy"]["mean"])),
                    key=lambda label: -configs[label]["validation_accuracy"]["mean"])
    for rank, label in enumerate(ranked, 1):
        configs[label]["validation_rank"] = rank
    chosen = ranked[0] if ranked else None
    anchor = next((label for label in ranked if label in grid.on_grid), None)
    gap = configs[chosen].get("validation_gap_vs_base") if chosen else None
    return {
        "selection_metric": SELECTION_METRIC,
        "selection": "highest mean final validation accuracy over seeds; held-out accuracy is not used",
        "options": {k: list(v) for k, v in grid.options.items()},
        "base": grid.base,
        "base_ran": base is not None,
        "configs": configs,
        "chosen": chosen,
        "chosen_values": configs[chosen]["values"] if chosen else None,
        "chosen_is_base": chosen is not None and chosen == grid.base,
        # The CI of the chosen config's paired validation gap against the base excludes 0.
        "chosen_beats_base": bool(gap and gap["n"] >= 2 and math.isfinite(gap["half_width"]) and gap["ci95"][0] > 0),
        "plot_anchor": anchor,
        "missing_metric": not ranked,
    }


# --- metrics.csv ---------------------------------------------------------------------------------


def metrics_csv(runs: Sequence[RunResult]) -> str:
    columns: dict[str, None] = {"strategy": None, "seed": None}
    for run in runs:
        for row in run.rows:
            columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for run in runs:
        for row in run.rows:
            writer.writerow({"strategy": run.label, "seed": run.seed, **{k: _fmt(v) for k, v in row.items()}})
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


# --- plots ---------------------------------------------------------------------------------------


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


def _band_lines(ax, data: _PlotData, key: str, *, smooth: int = 1, x_key: str | None = None) -> None:
    """One line per strategy: the mean of ``key`` over seeds with its 95 % CI band, against the
    step or against the mean of ``x_key`` (e.g. rollouts consumed)."""
    for label, runs in data.by.items():
        mean, half, x = _band(runs, key, smooth)
        if x_key is not None:
            x = _band(runs, x_key)[0]
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
        _band_lines(ax, data, key, x_key="rollouts")
        ax.set_xlabel("rollouts consumed")
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
    others = _values_text(fixed)
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


def plot_all(runs: Sequence[RunResult], options: CompareOptions, out: Path) -> list[str]:
    """Write the PNG plots; returns the file names written (plots without data are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _plot_data(runs, options)
    return _save_figures(plt, {name: (lambda draw=draw: draw(plt, data)) for name, draw in _FIGURES.items()}, out)


# --- report.md -----------------------------------------------------------------------------------


def _pm(entry: dict | None, scale: float = 1.0, digits: int = 3) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    m = entry["mean"] * scale
    h = entry.get("half_width")
    return f"{m:.{digits}f}" if h is None else f"{m:.{digits}f} ± {h * scale:.{digits}f}"


_CAPTIONS = {
    PLOTS[0]: "Accuracy against rollouts consumed.",
    PLOTS[1]: "Effective-gradient ratio: share of the step's rollouts that sit in groups with both outcomes.",
    PLOTS[2]: "alpha_t and beta_t used by each step's allocation, and the step's failure rate F_t.",
    PLOTS[3]: "Mean budget by the prompt's estimated pass rate, per third of training (pooled over seeds).",
    PLOTS[4]: "Difficulty transitions of train prompts by empirical pass rate over 16 samples: extremely-hard "
    "= 0/16, hard <= 4/16, medium < 12/16, easy < 16/16, extremely-easy = 16/16.",
}


def report_markdown(summary: dict[str, Any], plots: Sequence[str]) -> str:
    """report.md: the setting, the sweep's choice (for a sweep), the results table, the paired
    gaps and the figures."""
    grid_plots = [name for name in plots if name.startswith("grid_")]
    lines = [*_setting_md(summary)]
    if summary.get("grid"):
        lines += _grid_md(summary, grid_plots)
    lines += [*_results_md(summary), *_gaps_md(summary)]
    if summary.get("simulator_check"):
        lines += _check_md(summary["simulator_check"])
    lines += ["", "## Figures", ""]
    for name in plots:
        if name not in grid_plots:
            lines += [f"![{name}]({name})", "", _CAPTIONS.get(name, ""), ""]
    return "\n".join(lines) + "\n"


def _fresh_seeds(seeds: Sequence[int], n: int = 10) -> str:
    start = max(seeds, default=-1) + 1
    return ",".join(str(k) for k in range(start, start + n))


def _values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())


def _grid_md(s: dict[str, Any], plots: Sequence[str]) -> list[str]:
    """The sweep: the choice by validation accuracy, then its held-out accuracy, the table of every
    configuration and the per-option figures."""
    g = s["grid"]
    sim = s.get("simulator") or {}
    n_val = sim.get("validation_prompts")
    planned = math.prod(len(v) for v in g["options"].values())
    finished = sum(e["on_grid"] for e in g["configs"].values())
    lines = ["", "## Tuning sweep: chosen configuration", ""]
    lines += [
        f"Grid: {'; '.join(f'{k} = ' + ', '.join(map(format_value, v)) for k, v in g['options'].items())} "
        f"({planned} configuration{'s' * (planned != 1)}"
        + (f", {finished} of them finished" if finished < planned else "")
        + (", plus the base configuration" if g["base_ran"] and not g["configs"][g["base"]]["on_grid"] else "")
        + f"), every one on the same seeds {s['seeds']}. Base configuration: `{g['base']}`.",
        "",
        f"Selection: the highest mean final **validation accuracy** (`{g['selection_metric']}`) over seeds, measured on "
        + (f"{n_val} " if n_val else "")
        + "validation prompts that are neither trained on nor part of the held-out set. The held-out accuracy "
        "played no part in the choice; it is reported after it.",
        "",
    ]
    if g["missing_metric"] or g["chosen"] is None:
        return [*lines, f"**No configuration logged `{g['selection_metric']}`: nothing was chosen.**"]
    c = g["configs"][g["chosen"]]
    gap_v, gap_h = c.get("validation_gap_vs_base"), c.get("heldout_gap_vs_base")
    if g["chosen_is_base"]:
        verdict = "The base configuration is the best on validation."
    elif gap_v is None:
        verdict = "The base configuration did not finish; no paired gap."
    elif g["chosen_beats_base"]:
        verdict = (f"Paired against the base on validation: {_pm(gap_v, 100, 2)} points; the 95 % CI excludes 0.")
    else:
        verdict = (f"Paired against the base on validation: {_pm(gap_v, 100, 2)} points; the 95 % CI contains 0, "
                   "so at this number of seeds the chosen configuration is not distinguishable from the base.")
    lines += [
        f"**Chosen: `{g['chosen']}`** ({_values_text(c['values'])}): validation accuracy "
        f"{_pm(c['validation_accuracy'], digits=4)}. {verdict}",
        "",
        f"Held-out accuracy of the chosen configuration (reported after the choice): {_pm(c['heldout_accuracy'], digits=4)}"
        + (f"; paired against the base: {_pm(gap_h, 100, 2)} points." if gap_h is not None and not g["chosen_is_base"] else "."),
        "",
        "The best of several configurations on validation is biased upwards (it was picked for being high). The "
        "held-out prompts played no part in the choice, but the seeds did: validation and held-out measure the same "
        "trained runs, so luck in a run's training draws favours both. To confirm a choice, run it against the base "
        f"on fresh seeds: `cobarl compare --strategies '{g['base']},{g['chosen']}' --baseline '{g['base']}' "
        f"--seed-list {_fresh_seeds(s['seeds'])}` (with the same other options).",
        "",
        "| configuration | " + " | ".join(g["options"]) + " | validation acc | Δ validation vs base (points) | "
        "held-out acc | Δ held-out vs base (points) | rank (validation) |",
        "|---|" + "---|" * len(g["options"]) + "---|---|---|---|---|",
    ]
    for label, e in g["configs"].items():
        name = f"`{label}`" + (" (base)" if e["is_base"] else "")
        if label == g["chosen"]:
            name = f"**{name}** ★"
        values = [format_value(e["values"][k]) for k in g["options"]]
        gap = (lambda key: "—") if e["is_base"] else (lambda key: _pm(e.get(key), 100, 2))
        lines.append(
            f"| {name} | " + " | ".join(values) + f" | {_pm(e['validation_accuracy'], digits=4)} | "
            f"{gap('validation_gap_vs_base')} | {_pm(e['heldout_accuracy'], digits=4)} | "
            f"{gap('heldout_gap_vs_base')} | {e.get('validation_rank', 'n/a')} |"
        )
    lines += ["", "Accuracies: mean ± 95 % CI half-width over seeds; Δ: paired by seed against the base configuration."]
    for name in plots:
        option = name[len("grid_"):-len(".png")]
        caption = ("Validation accuracy (mean over seeds) over the two options; red box: the chosen configuration."
                   if name == GRID_HEATMAP else
                   f"Validation accuracy against {option}, the other options at the values of the best grid configuration "
                   f"(`{g['plot_anchor']}`); a dashed line marks the base configuration when it is not a grid point. The band "
                   "is the spread over seeds, most of which every configuration shares (same task per seed): the paired "
                   "Δ columns above are the sharper comparison.")
        lines += ["", f"![{name}]({name})", "", caption]
    return lines


def _setting_md(s: dict[str, Any]) -> list[str]:
    lines = ["# cobarl compare", ""]
    if s["command"]:
        lines += [f"Command: `{s['command']}`", ""]
    if s.get("incomplete"):
        inc = s["incomplete"]
        lines += [f"**Interrupted: {inc['finished_runs']} of {inc['planned_runs']} runs finished.** Only those are "
                  f"reported; missing: {', '.join(inc['missing'])}.", ""]
    lines += [
        f"Backend **{s['backend']}**; seeds {s['seeds']}; {s['steps']} steps of {s['prompts_per_step']} prompts; "
        f"{s['rollouts_per_prompt']:g} rollouts per prompt on average x budget multiplier {s['budget_multiplier']:g} "
        f"= {s['budget_per_step']:g} rollouts per step (before per-strategy `@` multipliers).",
        "",
        "Strategies:",
        "",
    ]
    lines += [f"- `{label}`: {e['description']}" for label, e in s["strategies"].items()]
    if s["backend"] == "simulated":
        lines += [
            "",
            "Simulated task: " + ", ".join(f"{k}={v}" for k, v in s["simulator"].items())
            + ". This is an LLM-free model of GRPO learning dynamics, not an LLM result; see the README "
            "section *Simulator: what it captures and what it does not*.",
        ]
    return lines


def _results_md(s: dict[str, Any]) -> list[str]:
    acc, target = s["accuracy_metric"] or "accuracy", s["target_accuracy"]
    lines = ["", "## Results (mean ± 95 % CI half-width over seeds)", ""]
    lines += [f"*Rollouts to target*: rollouts until {acc} first reaches "
              + (f"{target:.4f}" if target is not None else f"`{s['baseline']}`'s final accuracy on the same seed")
              + " (reached: runs that got there)", ""]
    greedy = _has_greedy(s)
    lines += [
        "| strategy | initial held-out acc | final held-out acc |" + (" final greedy acc |" if greedy else "")
        + " final train solved | effective ratio | eff. ratio, last third | rollouts | rollouts to target (reached) |",
        "|---|---|---|" + ("---|" if greedy else "") + "---|---|---|---|---|",
    ]
    for label, e in s["strategies"].items():
        rt = e.get("rollouts_to_target", {})
        lines.append(
            f"| `{label}` | {_pm(e.get('initial_heldout_accuracy'))} | {_pm(e.get('final_heldout_accuracy'))} | "
            + (f"{_pm(e.get('final_heldout_greedy_accuracy'))} | " if greedy else "")
            + f"{_pm(e.get('final_train_solved'))} | "
            f"{_pm(e.get('effective_ratio'))} | {_pm(e.get('effective_ratio_last_third'))} | "
            f"{_pm(e.get('rollouts'), digits=0)} | {_pm(rt, digits=0)} ({rt.get('reached', 0)}/{rt.get('runs', 0)}) |"
        )
    return lines


def _has_greedy(s: dict[str, Any]) -> bool:
    """Whether the runs measured greedy accuracy (the real back-end does, the simulator cannot)."""
    return any((e.get("final_heldout_greedy_accuracy") or {}).get("mean") is not None for e in s["strategies"].values())


def _gaps_md(s: dict[str, Any]) -> list[str]:
    if not s["gaps_vs_baseline"]:
        return []
    greedy = _has_greedy(s)
    lines = [
        "",
        f"## Paired gaps against `{s['baseline']}` (same seeds; mean ± 95 % CI)",
        "",
        "| strategy | Δ held-out acc (points) |" + (" Δ greedy acc (points) |" if greedy else "")
        + " Δ train solved (points) | Δ effective ratio (relative %) | rollouts / baseline |",
        "|---|---|" + ("---|" if greedy else "") + "---|---|---|",
    ]
    for label, g in s["gaps_vs_baseline"].items():
        lines.append(
            f"| `{label}` | {_pm(g['final_heldout_accuracy'], 100, 2)} | "
            + (f"{_pm(g.get('final_heldout_greedy_accuracy'), 100, 2)} | " if greedy else "")
            + f"{_pm(g['final_train_solved'], 100, 2)} | "
            f"{_pm(g['effective_ratio_relative_percent'], 1, 1)} | {_pm(g['rollouts_ratio'], 1, 2)} |"
        )
    return [*lines, "", "A CI that contains 0 means no detectable difference at this number of seeds."]


def _points(share: float | None) -> float | None:
    return None if share is None else 100 * share  # a gain of 0 is a gain, not a missing one


def _check_md(check: dict[str, Any]) -> list[str]:
    """The simulator-vs-real section (`cobarl.experiments.sim_vs_real.simulator_check`)."""
    rc, gains, base = check["rank_correlation"], check["baseline_gain"], check["baseline"]

    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)

    lines = [
        "",
        f"## Simulator vs real back-end (`--against {check['real_report']}`)",
        "",
        "Same strategies, seeds, steps and budgets as the real comparison. The accuracies are on different tasks: "
        "compare the order of the arms and their gaps relative to the baseline's own gain.",
        "",
        f"- Spearman rank correlation across the {len(check['arms'])} arms: final held-out accuracy "
        f"**{num(rc['final_heldout_accuracy'], '+.2f')}**, effective-gradient ratio **{num(rc['effective_ratio'], '+.2f')}**",
        f"- order by final held-out accuracy, simulated: {' > '.join(check['order']['simulated'])}; "
        f"real: {' > '.join(check['order']['real'])}",
        f"- sign agreement of the held-out gaps against `{base}`: {check['heldout_gap_sign_agreement']}; real gaps "
        f"whose CI excludes 0: {', '.join(f'`{a}`' for a in check['real_gaps_resolved']) or 'none'}",
        f"- `{base}`'s own RL gain in held-out accuracy: simulated {num(_points(gains['simulated']), '+.2f')} "
        f"points, real {num(_points(gains['real']), '+.2f')} points",
        "",
        "| strategy | Δ held-out, sim (pts) | Δ held-out, real (pts) | Δ / baseline gain, sim | Δ / baseline gain, real "
        "| Δ effective ratio, sim (%) | Δ effective ratio, real (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in check["arms"]:
        if label == base:
            continue
        sim, real = check["per_arm"][label]["simulated"], check["per_arm"][label]["real"]
        lines.append(
            f"| `{label}` | {_pm(sim['heldout_gap'], 100, 2)} | {_pm(real['heldout_gap'], 100, 2)} | "
            f"{num(sim['heldout_gap_share_of_baseline_gain'], '+.2f')} | {num(real['heldout_gap_share_of_baseline_gain'], '+.2f')} | "
            f"{_pm(sim['effective_ratio_gap_relative_percent'], 1, 1)} | {_pm(real['effective_ratio_gap_relative_percent'], 1, 1)} |"
        )
    return lines


def write_report(
    runs: Sequence[RunResult], options: CompareOptions, out_dir: str | os.PathLike, *, command: str = "",
    plots: bool = True, incomplete: dict[str, Any] | None = None, against: tuple[str, dict] | None = None,
) -> dict[str, Any]:
    """Write every report file into ``out_dir`` (created if needed); returns the summary.

    ``incomplete``: see `summarise` (a comparison stopped early reports what had finished).
    ``against``: ``(folder, summary)`` of a real comparison this simulated one mirrors; the
    simulator check (`cobarl.experiments.sim_vs_real`) goes into summary.json and report.md.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs, options, command=command, incomplete=incomplete)
    if against is not None:
        summary["simulator_check"] = _clean(simulator_check(summary, against[1]))
        summary["simulator_check"]["real_report"] = against[0]
    write_text(out / "metrics.csv", metrics_csv(runs))
    write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    written = plot_all(runs, options, out) if plots else []
    if plots and summary.get("grid") and summary["grid"]["chosen"] is not None:
        written = plot_grid(summary["grid"], out) + written
    write_text(out / "report.md", report_markdown(summary, written))
    return summary
