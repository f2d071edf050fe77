"""The numbers of a comparison's report: ``summary.json`` (per-strategy means with 95 % Student-t
confidence intervals, paired gaps against the baseline, a sweep's choice) and ``metrics.csv``.

Gaps against the baseline are *paired* (same seed, same task, same prompt order and, in the
simulator, the same random draws), so their intervals are per-seed differences.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from scipy import stats

from cobarl import metrics as M
from cobarl.experiments.comparison.backends import effective_strategy
from cobarl.experiments.comparison.grid import SELECTION_METRIC
from cobarl.experiments.comparison.runs import CompareOptions, RunResult

ACCURACY_KEYS = (M.EVAL_HELDOUT_ACCURACY,)


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


# How an arm spends each step: metric of the row -> key of the per-arm summary (mean over the steps
# that generated, then over seeds). Rollouts are the ones GENERATED unless "trained".
SPENDING = {
    M.ROLLOUT_COUNT: "rollouts_generated_per_step",
    M.ROLLOUT_TRAINED: "rollouts_trained_per_step",
    M.ROLLOUT_ROUNDS: "rounds_per_step",
    M.ROLLOUT_PROMPTS: "prompts_consumed_per_step",
    M.ROLLOUT_TOKENS: "completion_tokens_per_step",  # real back-end only (the simulator has no tokens)
}
EQUAL_GENERATED = "heldout_accuracy_at_equal_generated"


def _per_step(run: RunResult, key: str) -> float:
    """Mean of ``key`` over the steps that generated rollouts (NaN when the run did not log it)."""
    v, made = _series(run, key), _series(run, M.ROLLOUT_COUNT)
    v = v[np.isfinite(v) & ~(made <= 0)]
    return float(v.mean()) if v.size else math.nan


def equal_generated_rollouts(runs: Sequence[RunResult]) -> float:
    """G of "accuracy at equal generated rollouts": the smallest final cumulative generated total of any
    run, so that every run's curve reaches it (NaN without runs that count rollouts)."""
    finals = [_final(r, "rollouts") for r in runs]
    finals = [f for f in finals if math.isfinite(f)]
    return min(finals) if finals else math.nan


def rollout_curve(run: RunResult, key: str, smooth: Callable[[np.ndarray], np.ndarray] | None = None):
    """(cumulative generated rollouts, ``key``) at the run's steps where both are known (``smooth``
    applied to the per-step series first); held-out accuracy starts at (0, the run's initial accuracy)."""
    acc, roll = _series(run, key), _series(run, "rollouts")
    if smooth is not None:
        acc = smooth(acc)
    ok = np.isfinite(acc) & np.isfinite(roll)
    x, y = roll[ok], acc[ok]
    start = _number(run.summary.get(M.SUMMARY_INITIAL_ACCURACY)) if key == M.EVAL_HELDOUT_ACCURACY else math.nan
    if math.isfinite(start):
        x, y = np.concatenate([[0.0], x]), np.concatenate([[start], y])
    return x, y


def accuracy_at_rollouts(run: RunResult, key: str, rollouts: float) -> float:
    """``key`` interpolated linearly on the run's curve against cumulative generated rollouts, at
    ``rollouts``; the curve starts at (0, the run's initial accuracy) when it has one. NaN past its end.

    >>> rows = [{"rollouts": 100, "acc": 0.5}, {"rollouts": 200, "acc": 0.7}]
    >>> accuracy_at_rollouts(RunResult("a", 0, rows, {"initial_heldout_accuracy": 0.3}), "acc", 150)
    0.6
    """
    x, y = rollout_curve(run, key)
    if not math.isfinite(rollouts) or x.size == 0 or rollouts > x[-1] or rollouts < x[0]:
        return math.nan
    return float(np.interp(rollouts, x, y))


def _rollouts_to(run: RunResult, key: str, target: float) -> float:
    """Cumulative rollouts GENERATED when ``key`` first reaches ``target`` (NaN: never)."""
    acc, roll = _series(run, key), _series(run, "rollouts")
    hit = np.flatnonzero(np.isfinite(acc) & (acc >= target))
    return float(roll[hit[0]]) if hit.size else math.nan


def summarise_comparison(runs: Sequence[RunResult], options: CompareOptions, *, command: str = "",
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
    equal = equal_generated_rollouts(runs)
    per_run = {label: [_run_metrics(r, acc, options.target_accuracy if options.target_accuracy is not None
                                    else targets.get(r.seed), equal) for r in rs] for label, rs in by.items()}
    summary = {
        "command": command,
        "backend": options.backend,
        "seeds": list(options.seeds),
        "steps": options.steps,
        "budget": options.budget,
        "prompts_per_step": options.prompts_per_step,
        "rollouts_per_prompt": options.rollouts_per_prompt,
        "budget_multiplier": options.budget_multiplier,
        "budget_per_step": options.prompts_per_step * options.rollouts_per_prompt * options.budget_multiplier,
        "simulator": asdict(options.sim) if options.backend == "simulated" else None,
        "accuracy_metric": acc,
        "baseline": options.baseline_label,
        "target_accuracy": options.target_accuracy,  # None: per seed, the baseline's final accuracy
        "equal_generated_rollouts": equal,  # G of heldout_accuracy_at_equal_generated
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


def _run_metrics(run: RunResult, acc: str | None, target: float | None, equal: float) -> dict[str, float]:
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
        "steps": float(len(run.rows)),
        "rollouts_to_target": _rollouts_to(run, acc, target) if acc and target is not None else math.nan,
        EQUAL_GENERATED: accuracy_at_rollouts(run, acc, equal) if acc else math.nan,
        **{name: _per_step(run, key) for key, name in SPENDING.items()},
    }


def _strategy_entry(spec, options: CompareOptions, runs: list[RunResult], metrics: list[dict]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "description": spec.describe(),
        "allocator": spec.strategy if isinstance(spec.strategy, str) else getattr(spec.strategy, "__name__", "callable"),
        "overrides": spec.overrides,
        "budget_multiplier": spec.budget_multiplier * options.budget_multiplier,
        # every setting of the strategy the arm ran with (what --against mirrors on the simulator); the
        # key keeps its name from when every strategy was an allocator's configuration (summary.json format)
        "allocator_config": effective_strategy(spec, options).to_dict(),
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
            EQUAL_GENERATED: mean_ci([a[EQUAL_GENERATED] - b[EQUAL_GENERATED] for a, b in pairs]),
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
