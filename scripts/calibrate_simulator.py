"""Calibrate the simulator's ``families-v4`` preset on strategy-neutral measurements only.

No allocation strategy other than uniform GRPO and the probe's fixed allocation is ever run here.
Two stages, each a grid search of a weighted squared error (each term divided by its tolerance):

1. the task, from the warm-started model alone: ``skill_offset`` (a logit shift of every family's
   ``logit(1 - q_k)``) and ``difficulty_std`` (per-prompt spread) so that the expected 16-sample
   histogram of the train prompts (0/16, 1-4/16, 16/16) and the held-out accuracy before RL match;
2. the learner, from uniform GRPO and the probe: ``lr`` and ``transfer`` so that uniform GRPO's
   held-out gain, its epoch-1 and second-half shares, its held-out/train gain ratio, and the probe's
   favoured/unfavoured gain ratios (train, held-out) and the placebo's match.

Targets (``--targets FILE``, JSON; every key a number, ``sources`` an optional object of notes):

    hist_0, hist_1_4, hist_16         share of train prompts at 0/16, 1-4/16 and 16/16 (warm start, T = 1)
    uniform_sampled_before/_after     uniform GRPO's held-out sampled accuracy (avg@8) before and after
    epoch1_share                      share of that gain made in epoch 1 (24 steps)
    second_half_share                 share of that gain made in steps 151-300
    probe_ratio_train/_heldout        probe: favoured-half / unfavoured-half mean gain (train / held-out)
    placebo_ratio                     the same split measured on the uniform run (train and held-out)
    heldout_train_gain_ratio          optional: uniform's held-out gain / train gain (fixes transfer)

Usage::

    python scripts/calibrate_simulator.py --targets scripts/targets-v4.json
    python scripts/calibrate_simulator.py --targets t.json --seeds 2 --lr 0.1,0.2 --transfer 0.5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from cobarl.experiments.simulation.sim_probe import expected_histogram, run_sim_probe
from cobarl.experiments.simulation.sim_presets import families_v4_options
from cobarl.experiments.simulation.sim_model import make_task

REQUIRED = ("hist_0", "hist_1_4", "hist_16", "uniform_sampled_before", "uniform_sampled_after", "epoch1_share",
            "second_half_share", "probe_ratio_train", "probe_ratio_heldout", "placebo_ratio")
OPTIONAL = ("heldout_train_gain_ratio",)

# Tolerances: the size of a miss that counts as one unit of error. Set from how much each measurement
# moves between real seeds (prototype, 4 seeds: histogram +-0.02, gain +-0.02, probe ratio 1.9-3.0,
# placebo 0.9-1.1), so no single noisy number dominates the fit.
TASK_TOLERANCE = {"hist_0": 0.02, "hist_1_4": 0.02, "hist_16": 0.02, "uniform_sampled_before": 0.02}
LEARNER_TOLERANCE = {"gain": 0.03, "epoch1_share": 0.04, "second_half_share": 0.06, "probe_ratio_train": 0.5,
                     "probe_ratio_heldout": 0.5, "placebo_ratio_train": 0.15, "placebo_ratio_heldout": 0.15,
                     "heldout_train_gain_ratio": 0.1}

DEFAULT_GRID = {"skill_offset": "0,-0.1,-0.2,-0.3,-0.4,-0.5", "difficulty_std": "0,0.25,0.5,0.75,1.0",
                "lr": "0.05,0.1,0.15,0.2,0.3,0.4,0.5,0.6,0.7,0.8,1.0", "transfer": "0.1,0.15,0.2,0.3,0.5,0.7,1.0"}


def read_targets(path: Path) -> dict[str, float]:
    """The targets in ``path``; refuses a missing or non-finite required key and any unknown key."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--targets: cannot read {path} ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--targets: {path} must hold a JSON object")
    raw = {k: v for k, v in raw.items() if k != "sources"}
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    missing = [k for k in REQUIRED if k not in raw]
    if unknown or missing:
        raise ValueError(f"--targets {path}: " + "; ".join(
            ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + ([f"missing {', '.join(missing)}"] if missing else []))
            + f" (keys: {', '.join(REQUIRED + OPTIONAL)})")
    bad = [k for k, v in raw.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
    if bad:
        raise ValueError(f"--targets {path}: {', '.join(bad)} must be finite numbers")
    t = {k: float(v) for k, v in raw.items()}
    shares = [k for k in ("hist_0", "hist_1_4", "hist_16", "uniform_sampled_before", "uniform_sampled_after") if not 0 <= t[k] <= 1]
    if shares:
        raise ValueError(f"--targets {path}: {', '.join(shares)} must lie in [0, 1]")
    if t["hist_0"] + t["hist_1_4"] + t["hist_16"] > 1 + 1e-9:
        raise ValueError(f"--targets {path}: hist_0 + hist_1_4 + hist_16 exceeds 1")
    if t["uniform_sampled_after"] <= t["uniform_sampled_before"]:
        raise ValueError(f"--targets {path}: uniform_sampled_after must exceed uniform_sampled_before (no gain to share out)")
    return t


def parse_values(text: str, name: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{name.replace('_', '-')}: comma-separated numbers expected, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"--{name.replace('_', '-')}: at least one finite number expected, got {text!r}")
    return values


def loss(sim: dict[str, float], target: dict[str, float], tolerance: dict[str, float]) -> float:
    """Sum of squared misses in units of tolerance, over the keys both sides have (NaN: a large miss)."""
    total = 0.0
    for k, tol in tolerance.items():
        if k in target and k in sim:
            miss = (sim[k] - target[k]) / tol
            total += miss * miss if math.isfinite(miss) else 1e6
    return total


def task_measures(skill_offset: float, difficulty_std: float, seeds: list[int]) -> dict[str, float]:
    """Expected histogram of the train prompts and held-out accuracy at the start, mean over seeds."""
    sim = families_v4_options(skill_offset=skill_offset, difficulty_std=difficulty_std, lr=0.0, transfer=0.0).sim
    rows = []
    for seed in seeds:
        t = make_task(sim, seed)
        p = t.initial_pass_rates()
        rows.append({**expected_histogram(p[:t.n_train]), "uniform_sampled_before": float(p[t.n_train:].mean())})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def learner_measures(skill_offset: float, difficulty_std: float, lr: float, transfer: float, seeds: list[int]) -> dict[str, float]:
    """Uniform run and probe (``run_sim_probe``), mean over seeds (ratios: the mean of per-seed ratios, as
    ``cobarl probe`` reports them)."""
    options = families_v4_options(skill_offset=skill_offset, difficulty_std=difficulty_std, lr=lr, transfer=transfer)
    runs = [run_sim_probe(options, seed) for seed in seeds]
    def mean(get):
        return float(np.mean([get(r) for r in runs]))  # NaN if any seed has no ratio: the fit counts it as a miss

    return {
        "gain": mean(lambda r: r["uniform"]["gain"]),
        "uniform_sampled_after": mean(lambda r: r["uniform"]["heldout_after"]),
        "epoch1_share": mean(lambda r: r["uniform"]["epoch1_share"]),
        "second_half_share": mean(lambda r: r["uniform"]["second_half_share"]),
        "heldout_train_gain_ratio": mean(lambda r: r["uniform"]["heldout_train_gain_ratio"]),
        "probe_ratio_train": mean(lambda r: r["ratios"]["probe"]["train"]),
        "probe_ratio_heldout": mean(lambda r: r["ratios"]["probe"]["held_out"]),
        "placebo_ratio_train": mean(lambda r: r["ratios"]["placebo"]["train"]),
        "placebo_ratio_heldout": mean(lambda r: r["ratios"]["placebo"]["held_out"]),
    }


def learner_targets(t: dict[str, float]) -> dict[str, float]:
    out = {"gain": t["uniform_sampled_after"] - t["uniform_sampled_before"], "epoch1_share": t["epoch1_share"],
           "second_half_share": t["second_half_share"], "probe_ratio_train": t["probe_ratio_train"],
           "probe_ratio_heldout": t["probe_ratio_heldout"], "placebo_ratio_train": t["placebo_ratio"],
           "placebo_ratio_heldout": t["placebo_ratio"]}
    if "heldout_train_gain_ratio" in t:
        out["heldout_train_gain_ratio"] = t["heldout_train_gain_ratio"]
    return out


def edge_choices(chosen: dict[str, float], grid: dict[str, list[float]]) -> list[str]:
    """Names whose chosen value is the smallest or largest searched (and more than one value was searched),
    except at a hard bound of the parameter (transfer 0 or 1, lr or difficulty_std 0).

    >>> edge_choices({"lr": 0.5, "transfer": 1.0}, {"lr": [0.1, 0.5], "transfer": [0.5, 1.0]})
    ['lr']
    """
    bounds = {"transfer": (0.0, 1.0), "lr": (0.0, None), "difficulty_std": (0.0, None)}
    out = []
    for name, value in chosen.items():
        values = grid[name]
        lo, hi = bounds.get(name, (None, None))
        at_edge = (value == min(values) and value != lo) or (value == max(values) and value != hi)
        if len(values) > 1 and at_edge:
            out.append(name)
    return out


def calibrate(targets: dict[str, float], grid: dict[str, list[float]], seeds: list[int], log=print) -> dict:
    started = time.perf_counter()
    task_grid = [(o, d, loss(task_measures(o, d, seeds), targets, TASK_TOLERANCE))
                 for o in grid["skill_offset"] for d in grid["difficulty_std"]]
    offset, dstd, task_loss = min(task_grid, key=lambda x: x[2])
    task_fit = task_measures(offset, dstd, seeds)
    log(f"stage 1 (task): searched skill_offset {grid['skill_offset']} x difficulty_std {grid['difficulty_std']}")
    log(f"  chosen skill_offset={offset:g} difficulty_std={dstd:g}, loss {task_loss:.2f} (in tolerance units^2)")
    for k in TASK_TOLERANCE:
        log(f"  {k:24s} sim {task_fit[k]:.3f}  target {targets[k]:.3f}  (tolerance {TASK_TOLERANCE[k]})")
    goal = learner_targets(targets)
    rows = []
    log(f"stage 2 (learner): {len(grid['lr']) * len(grid['transfer'])} (lr, transfer) pairs x {len(seeds)} seed(s), "
        "uniform + probe runs each")
    header = "  lr     transfer  loss    gain   ep1    2nd-half  ho/tr  probe tr/ho   placebo tr/ho"
    log(header)
    for lr in grid["lr"]:
        for transfer in grid["transfer"]:
            m = learner_measures(offset, dstd, lr, transfer, seeds)
            rows.append({"lr": lr, "transfer": transfer, "loss": loss(m, goal, LEARNER_TOLERANCE), **m})
            r = rows[-1]
            log(f"  {lr:<6g} {transfer:<8g} {r['loss']:7.2f} {r['gain']:.3f}  {r['epoch1_share']:.3f}  {r['second_half_share']:.3f}"
                f"     {r['heldout_train_gain_ratio']:.2f}   {r['probe_ratio_train']:.2f}/{r['probe_ratio_heldout']:.2f}"
                f"     {r['placebo_ratio_train']:.2f}/{r['placebo_ratio_heldout']:.2f}")
    best = min(rows, key=lambda r: r["loss"])
    log(f"chosen: lr={best['lr']:g} transfer={best['transfer']:g}, loss {best['loss']:.2f}")
    log("  measure                  sim     target  miss/tolerance")
    for k, tol in LEARNER_TOLERANCE.items():
        if k in goal:
            log(f"  {k:24s} {best[k]:.3f}   {goal[k]:.3f}   {(best[k] - goal[k]) / tol:+.1f}")
    chosen = {"skill_offset": offset, "difficulty_std": dstd, "lr": best["lr"], "transfer": best["transfer"]}
    edges = edge_choices(chosen, grid)
    if edges:  # the best value may lie outside: say so rather than print it as the optimum
        log(f"WARNING: chosen at the edge of the searched grid for {', '.join(edges)}; widen it and rerun")
    log("preset (cobarl/experiments/simulation/sim_presets.py, V4_LEARNER): families_v4_options("
        + ", ".join(f"{k}={v:g}" for k, v in chosen.items()) + ")")
    log(f"{time.perf_counter() - started:.1f} s")
    return {"chosen": chosen, "seeds": seeds, "targets": targets,
            "task": {"fit": task_fit, "loss": task_loss, "tolerance": TASK_TOLERANCE,
                     "grid": [{"skill_offset": o, "difficulty_std": d, "loss": x} for o, d, x in task_grid]},
            "at_grid_edge": edges,
            "learner": {"fit": best, "targets": goal, "tolerance": LEARNER_TOLERANCE, "grid": rows}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", required=True, type=Path, help="JSON file of strategy-neutral measurements (see the module docstring).")
    p.add_argument("--seeds", type=int, default=5, help="Simulated seeds 0..N-1 averaged per grid point (default: 5).")
    for name, default in DEFAULT_GRID.items():
        p.add_argument(f"--{name.replace('_', '-')}", default=default, help=f"Values searched (default: {default}).")
    p.add_argument("--json", type=Path, default=None, help="Also write the chosen values, fit and grid here.")
    args = p.parse_args(argv)
    try:
        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        targets = read_targets(args.targets)
        grid = {name: parse_values(getattr(args, name), name) for name in DEFAULT_GRID}
        if any(v < 0 for v in grid["difficulty_std"] + grid["lr"]) or any(not 0 <= v <= 1 for v in grid["transfer"]):
            raise ValueError("--difficulty-std and --lr take values >= 0, --transfer values in [0, 1]")
    except ValueError as err:
        print(f"calibrate_simulator: error: {err}", file=sys.stderr)
        return 2
    result = calibrate(targets, grid, list(range(args.seeds)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
