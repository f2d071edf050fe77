"""Check the simulator against real training: the same arms, seeds and budgets on both back-ends.

``cobarl compare --against REAL_DIR`` reads a real comparison's ``summary.json``, runs the
simulator with its strategies, seeds, steps and budgets, and puts this check into the simulated
report. The two back-ends measure accuracy on different tasks, so raw accuracies are not
comparable; what can match is the *order* of the arms and the *relative* size of their gaps:

- rank correlation (Spearman) across arms of the final held-out accuracy and of the
  effective-gradient ratio;
- each arm's paired gap against the baseline, side by side, also as a share of the baseline's own
  RL gain (final − initial), which puts both back-ends' gaps on one scale;
- sign agreement of the held-out gaps, and which real gaps are resolved (CI excludes 0);
- the cell-by-cell check and its verdict (`cobarl.experiments.simulation.sim_map`), over this comparison's
  arms; ``--against`` with several real comparisons (a regime map) pools the cells of all.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import numpy as np

from cobarl.experiments.simulation.sim_map import cell_check, comparison_cells, excludes_zero, mean_of, real_task, spearman
from cobarl.experiments.simulation.sim_presets import SIM_PRESETS
from cobarl.experiments.comparison.specs import StrategySpec, parse_strategy
from cobarl.policies import StrategyConfig
from cobarl.tasks.embedded import TASKS
from cobarl.experiments.report.summary_io import ComparisonSummary

AGAINST_FIELDS = ("seeds", "steps", "prompts_per_step", "rollouts_per_prompt", "budget_multiplier", "baseline")
"""What ``--against`` takes from the real comparison, besides its strategy labels."""


def real_comparison_settings(real: ComparisonSummary) -> dict[str, Any]:
    """The settings a simulated run needs to mirror the real comparison ``real`` (its summary.json, read
    whole by `cobarl.experiments.report.summary_io.read_summary`): ``strategies`` maps each arm's label to
    the allocator settings it ran with."""
    if real.backend != "real":
        raise ValueError(f"--against takes a real comparison's report (backend 'real'); this one is {real.backend!r}")
    if real.incomplete:
        raise ValueError("--against: that real comparison was stopped early (summary.json: incomplete), so some arms "
                         "lack seeds and the simulated arms would not pair with them; finish it first")
    unknown = [label for label, e in real.strategies.items() if not e.allocator_config]
    if unknown:  # mirroring them with the simulator's defaults could silently change e.g. their max budget
        raise ValueError(f"--against: summary.json does not record the allocator settings of {', '.join(unknown)} "
                         "(written by an older cobarl); re-run that comparison with this version")
    return {**{k: real.settings[k] for k in AGAINST_FIELDS},
            "budget": real.settings.get("budget"),  # None: written before --budget existed
            "task": real_task(real.settings),  # read now: a command it cannot read stops before any run
            "strategies": {label: e.allocator_config for label, e in real.strategies.items()}}


def mirrored_strategies(settings: dict[str, Any]) -> tuple[StrategySpec, ...]:
    """The real comparison's arms under the same labels, each set to the strategy settings it ran
    with, as recorded in its summary.json: a real arm on the embedded task runs with that task's
    preset (an allocator's max budget 32, `cobarl.tasks.embedded.EmbeddedTask`), which the simulator's
    task does not have, and a mirror must not silently change it. A policy without a max budget draws
    its simulated rewards from a matrix as wide as that preset, as its mirror always did."""
    task = TASKS.get(settings.get("task") or "")
    specs = []
    for label, ran_with in settings["strategies"].items():
        spec = parse_strategy(label)
        ran = StrategyConfig.from_dict(ran_with).to_dict()  # a report of an older cobarl records every policy's options
        sim_default = spec.strategy_config(settings["steps"]).to_dict()
        changed = {k: v for k, v in ran.items() if k not in ("strategy", "total_steps") and sim_default.get(k) != v}
        width = None if "max_budget" in sim_default else ran_with.get("max_budget", task.max_budget if task else None)
        specs.append(StrategySpec(label, spec.strategy, {**spec.overrides, **changed}, spec.budget_multiplier, width))
    return tuple(specs)



def _baseline_gain(summary: dict[str, Any]) -> float:
    """The baseline's own RL gain in held-out accuracy (final − initial, mean over seeds)."""
    e = summary["strategies"][summary["baseline"]]
    return mean_of(e.get("final_heldout_accuracy")) - mean_of(e.get("initial_heldout_accuracy"))


def simulator_check(sim: dict[str, Any], real: dict[str, Any]) -> dict[str, Any]:
    """Compare two comparison summaries arm by arm (see the module docstring)."""
    base = real["baseline"]
    if sim.get("baseline") != base:
        raise ValueError(f"the simulated and real comparisons have different baselines ({sim.get('baseline')!r} vs {base!r})")
    arms = [label for label in real["strategies"] if label in sim["strategies"]]
    gains = {"simulated": _baseline_gain(sim), "real": _baseline_gain(real)}
    rows: dict[str, Any] = {}
    for label in arms:
        row: dict[str, Any] = {}
        for name, s in (("simulated", sim), ("real", real)):
            gap = s["gaps_vs_baseline"].get(label)  # None for the baseline itself
            held = (gap or {}).get("final_heldout_accuracy")
            row[name] = {
                "final_heldout_accuracy": mean_of(s["strategies"][label].get("final_heldout_accuracy")),
                "effective_ratio": mean_of(s["strategies"][label].get("effective_ratio")),
                "heldout_gap": held,
                # undefined when the baseline gained under half a point: a ratio to ~0 says nothing
                "heldout_gap_share_of_baseline_gain": mean_of(held) / gains[name] if held and gains[name] > 0.005 else math.nan,
                "effective_ratio_gap_relative_percent": (gap or {}).get("effective_ratio_relative_percent"),
            }
        rows[label] = row
    others = [label for label in arms if label != base]
    gaps = [(mean_of(rows[a]["simulated"]["heldout_gap"]), mean_of(rows[a]["real"]["heldout_gap"])) for a in others]
    signs = [(np.sign(s), np.sign(r)) for s, r in gaps if math.isfinite(s) and math.isfinite(r)]  # both measured
    resolved = [a for a in others if excludes_zero(rows[a]["real"]["heldout_gap"])]
    task = real_task(real)
    return {
        "real_task": task,
        "preset_note": preset_note(sim.get("simulator"), task),
        "baseline": base,
        "arms": arms,
        "baseline_gain": gains,
        "rank_correlation": {
            key: spearman([rows[a]["simulated"][key] for a in arms], [rows[a]["real"][key] for a in arms])
            for key in ("final_heldout_accuracy", "effective_ratio")
        },
        # arms from best to worst final held-out accuracy on each back-end
        "order": {name: sorted(arms, key=lambda a: -np.nan_to_num(rows[a][name]["final_heldout_accuracy"], nan=-np.inf))
                  for name in ("simulated", "real")},
        "heldout_gap_sign_agreement": f"{sum(s == r for s, r in signs)}/{len(signs)}",
        "real_gaps_resolved": resolved,
        "per_arm": rows,
        "cell_check": cell_check(comparison_cells(sim, real, task)),
    }


def preset_note(simulator: dict[str, Any] | None, task: str | None) -> str | None:
    """A line for the report when the simulated task is not the preset named as the real run's task
    (None when it is, or when the task has no preset): its gaps then mirror another world."""
    if task not in SIM_PRESETS or simulator is None:
        return None
    if json.loads(json.dumps(asdict(SIM_PRESETS[task].sim))) == simulator:
        return None
    return (f"the real comparison ran --task {task}, and this simulated task is not --sim-preset {task} "
            f"(another preset, or flags changed it): its gaps mirror another world")
