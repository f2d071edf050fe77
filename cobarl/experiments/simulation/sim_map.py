"""The simulator checked cell by cell against a real regime map.

A *cell* is one policy in one real comparison: (task, budget, policy), with the policy's paired gap in
final held-out accuracy against the comparison's baseline (uniform GRPO), mean and 95 % CI over
seeds, on the real back-end and on the simulator mirroring that comparison (``cobarl compare
--against REAL_DIR ...``, the simulator preset named as the real run's ``--task``). Over all cells:

(a) sign agreement: the share of the cells whose real CI excludes 0 in which the simulated gap has
    the real gap's sign (a simulated gap of exactly 0 has no sign: it disagrees);
(b) Spearman's rank correlation of simulated against real gaps over every cell;
(c) the verdict against the bar: (a) >= ``SIGN_AGREEMENT_BAR`` and (b) >= ``SPEARMAN_BAR``. Either
    measure undefined (no resolved cell; under 3 cells or a constant side) leaves it undetermined.

The bar says when the simulator's accuracy gaps may be read as predictions of real ones: the sign
for the gaps that are measured at all, the order for all of them.
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from cobarl.experiments.report.report_stats import _clean
from cobarl.experiments.simulation.sim_presets import SIM_PRESETS
from cobarl.experiments.report.summary_io import SummaryFormatError, read_summary
from cobarl.io import write_json, write_text
from cobarl.tasks.embedded import DEFAULT_TASK

SIGN_AGREEMENT_BAR = 0.8
SPEARMAN_BAR = 0.7
GAP_METRIC = "final_heldout_accuracy"
"""The gap a cell holds: paired over seeds against the baseline (summary.json ``gaps_vs_baseline``)."""


# --- the real comparison's task -------------------------------------------------------------------


def real_task(real: dict[str, Any]) -> str | None:
    """The embedded task a real comparison trained on, from its recorded command: ``--task`` in its
    ``--train-args`` (cobarl train's default task without it); None when it trained on ``--dataset``.
    Read with cobarl train's own parser, so whatever spelling it accepted reads the same here."""
    from cobarl.train.cli import build_parser as train_parser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--train-args", default=None)
    try:
        text = pre.parse_known_args(shlex.split(real["command"]))[0].train_args
        values = vars(train_parser().parse_args(shlex.split(text or "")))
    except (SystemExit, ValueError):
        raise ValueError(f"cannot read the task from the real comparison's command {real['command']!r}") from None
    if values.get("dataset") is not None:
        return None
    return values.get("task") or DEFAULT_TASK


def preset_for(real: dict[str, Any], where: str) -> str:
    """The simulator preset mirroring a real comparison: the one named as its task, or a clear refusal."""
    task = real_task(real)
    if task is None:
        raise ValueError(f"--against {where}: that comparison trained on --dataset, which no simulator preset "
                         "mirrors; a regime map takes embedded-task comparisons only")
    if task not in SIM_PRESETS:
        raise ValueError(f"--against {where}: it ran --task {task}, which has no simulator preset (presets: "
                         f"{', '.join(p for p in SIM_PRESETS if p != 'default')}); leave it out of the map")
    return task


# --- cells and the check ---------------------------------------------------------------------------


def mean_of(entry: dict | None) -> float:
    v = (entry or {}).get("mean")
    return math.nan if v is None else float(v)


def excludes_zero(entry: dict | None) -> bool:
    lo, hi = ((entry or {}).get("ci95") or [None, None])
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def comparison_cells(sim: dict[str, Any], real: dict[str, Any], task: str | None) -> list[dict[str, Any]]:
    """One cell per arm of the real comparison ``real`` other than its baseline, beside the same arm of the
    simulated comparison ``sim`` that mirrored it (both summary.json dicts)."""
    if sim.get("baseline") != real["baseline"]:
        raise ValueError(f"the simulated and real comparisons have different baselines ({sim.get('baseline')!r} "
                         f"vs {real['baseline']!r})")
    cells = []
    for label, gap in real["gaps_vs_baseline"].items():
        r = (gap or {}).get(GAP_METRIC)
        s = (sim["gaps_vs_baseline"].get(label) or {}).get(GAP_METRIC)
        cells.append({"task": task, "mode": real.get("budget") or "generated", "budget": real["budget_multiplier"],
                      "policy": label, "baseline": real["baseline"],
                      "simulated": mean_of(s), "simulated_ci95": (s or {}).get("ci95"),
                      "real": mean_of(r), "real_ci95": (r or {}).get("ci95"), "seeds": (r or {}).get("n"),
                      "real_resolved": excludes_zero(r)})
    return cells


def sign_agreement(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """(a): among cells whose real CI excludes 0, how many have the simulated gap on the real gap's side of
    0. A cell without a simulated gap (the simulator could not run that arm) counts as disagreeing: a
    simulator that cannot run a policy does not predict its sign."""
    resolved = [c for c in cells if c["real_resolved"]]
    agree = int(sum(math.isfinite(c["simulated"]) and np.sign(c["simulated"]) == np.sign(c["real"]) for c in resolved))
    return {"agree": agree, "resolved": len(resolved), "share": agree / len(resolved) if resolved else None}


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho over the pairs where both are finite; None when undefined (under 3 such pairs, or
    either side constant)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return None
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


def gap_spearman(cells: Sequence[dict[str, Any]]) -> float | None:
    """(b): Spearman's rho of simulated against real gaps over the cells where both are measured."""
    return spearman([c["simulated"] for c in cells], [c["real"] for c in cells])


def verdict(share: float | None, rho: float | None) -> dict[str, Any]:
    """(c): whether the simulator meets the bar; ``passed`` None when a measure is undefined."""
    bar = {"sign_agreement": SIGN_AGREEMENT_BAR, "spearman": SPEARMAN_BAR}
    if share is None or rho is None:
        missing = [name for name, v in (("sign agreement", share), ("Spearman", rho)) if v is None]
        return {"bar": bar, "passed": None, "text": f"undetermined: no {' and no '.join(missing)} to judge "
                "(no real gap resolved, or too few cells)"}
    passed = bool(share >= SIGN_AGREEMENT_BAR and rho >= SPEARMAN_BAR)
    return {"bar": bar, "passed": passed,
            "text": f"{'meets' if passed else 'fails'} the bar (sign agreement {share:.0%} vs >= "
                    f"{SIGN_AGREEMENT_BAR:.0%}, Spearman {rho:+.2f} vs >= {SPEARMAN_BAR:.2f})"}


def cell_check(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """(a), (b) and (c) over ``cells``, with the cells; keys unique per (task, budget mode, budget, policy)."""
    # a gap read back from JSON as null (not simulated, or not measured) is NaN here
    cells = [{**c, **{k: math.nan if c[k] is None else c[k] for k in ("simulated", "real")}} for c in cells]
    keys = [(c["task"], c.get("mode", "generated"), c["budget"], c["policy"]) for c in cells]
    twice = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if twice:
        raise ValueError("two real comparisons give the same cell (task, budget, policy): "
                         + ", ".join(f"{t} {m} x{b:g} {p}" for t, m, b, p in twice) + "; pass each (task, budget) once")
    signs = sign_agreement(cells)
    rho = gap_spearman(cells)
    return {"cells": list(cells), "sign_agreement": signs, "spearman": rho, "verdict": verdict(signs["share"], rho)}


# --- report ----------------------------------------------------------------------------------------


def _gap_text(mean: float, ci: list | None) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not ci or ci[0] is None or ci[1] is None:
        return f"{100 * mean:+.2f}"
    return f"{100 * mean:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


def cell_check_md(check: dict[str, Any], heading: str = "###") -> list[str]:
    """The cell table and (a)-(c) as report.md lines."""
    s, rho = check["sign_agreement"], check["spearman"]
    share = "n/a" if s["share"] is None else f"{s['share']:.0%}"
    lines = [
        "", f"{heading} Cell by cell: Δ held-out accuracy against the baseline (points; mean [95 % CI] over seeds)", "",
        f"- (a) sign agreement among the cells whose real CI excludes 0: **{s['agree']}/{s['resolved']} = {share}**",
        f"- (b) Spearman's rank correlation of simulated vs real Δ over all {len(check['cells'])} cells: "
        f"**{'n/a' if rho is None else format(rho, '+.2f')}**",
        f"- (c) verdict: **{check['verdict']['text']}**", "",
        "| task | budget | policy | Δ simulated | Δ real | real CI excludes 0 | same sign |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in check["cells"]:
        c = {**c, "simulated": math.nan if c["simulated"] is None else c["simulated"]}  # JSON null: not simulated
        same = "—" if not c["real_resolved"] else (
            "yes" if math.isfinite(c["simulated"]) and np.sign(c["simulated"]) == np.sign(c["real"]) else "**no**")
        lines.append(f"| {c['task'] or 'n/a'} | {c.get('mode', 'generated')} x{c['budget']:g} | `{c['policy']}` | "
                     f"{_gap_text(c['simulated'], c['simulated_ci95'])} | {_gap_text(c['real'], c['real_ci95'])} | "
                     f"{'yes' if c['real_resolved'] else 'no'} | {same} |")
    return lines


# --- a regime map: several real comparisons ---------------------------------------------------------

MAP_FILES = ("report.md", "map_check.json")
"""What ``--against`` with several real comparisons writes at the top of its output folder."""


def map_plan(real_dirs: Sequence[str], explicit_preset: str | None) -> list[tuple[str, str, str]]:
    """``(real_dir, sim preset, sub-folder name)`` for each real comparison of a map, or a refusal naming
    the problem (a preset given by hand, a task without a preset, two comparisons of one task and budget,
    different baselines)."""
    if explicit_preset is not None:
        raise ValueError("--sim-preset: with several --against folders each is mirrored by the preset named as its "
                         "--task; leave --sim-preset out")
    plan, baselines = [], {}
    for real_dir in real_dirs:
        path = Path(real_dir) / "summary.json"
        try:
            real = read_summary(path)
        except (OSError, SummaryFormatError) as err:
            raise ValueError(f"--against: cannot read {path} ({err}); pass the folders of 'cobarl compare "
                             "--backend real' reports") from None
        preset = preset_for(real.settings, real_dir)
        mode = real.settings.get("budget") or "generated"  # None: written before --budget existed
        name = f"{preset}-{mode}-x{real.settings['budget_multiplier']:g}"
        if name in {n for _, _, n in plan}:
            raise ValueError(f"--against: two real comparisons ran --task {preset} with --budget {mode} at budget "
                             f"multiplier {real.settings['budget_multiplier']:g}; pass each (task, budget) once")
        baselines[real_dir] = real.baseline
        plan.append((str(real_dir), preset, name))
    if len(set(baselines.values())) > 1:
        raise ValueError("--against: the real comparisons have different baselines ("
                         + ", ".join(f"{d}: {b}" for d, b in baselines.items()) + "); a map's cells share one")
    return plan


def write_map_report(out: Path, plan: Sequence[tuple[str, str, str]], summaries: Sequence[dict[str, Any]], *,
                     command: str = "", failed: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The map check of the simulated comparisons ``summaries`` (in ``plan``'s order, each with its
    ``simulator_check``): OUT/map_check.json and OUT/report.md. Returns the check. ``failed``: arms the
    simulator could not run (report, policy, seed, reason); their cells have no simulated gap."""
    out = Path(out)
    check = _clean({**cell_check([c for s in summaries for c in s["simulator_check"]["cell_check"]["cells"]]),
                    "command": command, "not_simulated": list(failed),
                    "comparisons": [{"real_report": d, "sim_preset": p, "report": n} for d, p, n in plan]})
    write_json(out / "map_check.json", check, indent=2)
    lines = ["# Simulator vs real: the regime map, cell by cell", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += ["Each real comparison mirrored by the simulator preset named as its `--task` (same strategies, seeds, "
              "steps and budgets); each has its own report:", ""]
    lines += [f"- [`{n}/report.md`]({n}/report.md): `--sim-preset {p}` against `{d}`" for d, p, n in plan]
    if failed:
        lines += ["", "Arms the simulator could not run (their cells have no simulated gap and count as disagreeing):", ""]
        lines += [f"- `{f['report']}`: `{f['policy']}` (seed {f['seed']}): {f['reason']}" for f in failed]
    lines += cell_check_md(check, heading="##")
    lines += ["", f"The bar (sign agreement >= {SIGN_AGREEMENT_BAR:.0%} and Spearman >= {SPEARMAN_BAR:.2f}) says when "
              "the simulator's held-out accuracy gaps may be read as predictions of real ones: the sign where the real "
              "gap is resolved, the order everywhere. A simulated gap of exactly 0, or none (an arm the simulator could not "
              "run), counts as a disagreement; Spearman ranks the cells with both gaps."]
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return check
