"""``cobarl compare``: run strategies side by side (same task, same seeds) and write one report.

Examples::

    cobarl compare                                   # the issue's 8 strategies x 5 seeds, simulated
    cobarl compare --strategies uniform,coba,coba@0.5 --seeds 10 --output-dir runs/half
    cobarl compare --budget-multiplier 0.5           # every strategy at half budget
    python -m cobarl.experiments --strategies all --steps 100
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

from cobarl.experiments.compare import (
    BACKENDS,
    DEFAULT_STRATEGIES,
    PRESETS,
    BackendUnavailable,
    CompareOptions,
    default_workers,
    parse_strategies,
    run_compare,
)
from cobarl.experiments.report import write_report
from cobarl.experiments.simulator import SimConfig

_SIM = SimConfig()


def build_parser(prog: str = "cobarl compare") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run several rollout-allocation strategies on the same task with the same seeds and write "
        "summary.json, metrics.csv, plots and report.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        default=[",".join(DEFAULT_STRATEGIES)],
        help="Comma/space-separated specs NAME[:key=value,...][@MULTIPLIER]; 'default' = the issue's list, "
        f"'all' = every preset. Presets: {', '.join(PRESETS)}; also any allocator strategy and fixed-beta-A-B. "
        "Examples: coba:kappa=7, coba@0.5 (half budget).",
    )
    p.add_argument("--backend", choices=list(BACKENDS), default="simulated", help="simulated (no LLM) or real (cobarl train).")
    p.add_argument("--seeds", type=int, default=5, help="Number of seeds, 0..N-1 (ignored with --seed-list).")
    p.add_argument("--seed-list", type=str, default=None, help="Explicit comma-separated seeds, e.g. 3,7,11.")
    p.add_argument("--steps", type=int, default=200, help="Training steps per run.")
    p.add_argument("--prompts-per-step", type=int, default=64, help="M, prompts per step.")
    p.add_argument("--rollouts-per-prompt", type=float, default=16, help="G, rollouts per prompt on average (sets the budget).")
    p.add_argument("--budget-multiplier", type=float, default=1.0, help="Scale every strategy's budget, e.g. 0.5 for half budget.")
    p.add_argument("--baseline", default=None, help="Label the gaps are measured against (default: uniform if run).")
    p.add_argument("--target-accuracy", type=float, default=None,
                   help="Held-out accuracy for 'rollouts to target' (default: 90%% of the baseline's gain).")
    p.add_argument("--output-dir", default=None, help="Report folder (default: runs/compare-<timestamp>).")
    p.add_argument("--workers", type=int, default=default_workers(), help="Parallel processes.")
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")
    p.add_argument("--no-plots", action="store_true", help="Skip the PNG plots (faster; no matplotlib needed).")
    sim = p.add_argument_group("simulator (--backend simulated)")
    sim.add_argument("--train-prompts", type=int, default=_SIM.train_prompts, help="Prompts in the train split.")
    sim.add_argument("--heldout-prompts", type=int, default=_SIM.heldout_prompts, help="Held-out prompts (same clusters).")
    sim.add_argument("--clusters", type=int, default=_SIM.clusters, help="Clusters of related prompts.")
    sim.add_argument("--skill-mean", type=float, default=_SIM.skill_mean, help="Mean initial cluster skill (logits).")
    sim.add_argument("--skill-std", type=float, default=_SIM.skill_std, help="Spread of initial cluster skills.")
    sim.add_argument("--difficulty-std", type=float, default=_SIM.difficulty_std, help="Spread of prompt difficulties.")
    sim.add_argument("--lr", type=float, default=_SIM.lr, help="Logit step per unit of GRPO signal.")
    sim.add_argument("--transfer", type=float, default=_SIM.transfer, help="Share of a prompt's step given to its cluster.")
    return p


def options_from_args(args: argparse.Namespace) -> CompareOptions:
    seeds = tuple(int(s) for s in args.seed_list.split(",")) if args.seed_list else tuple(range(args.seeds))
    sim = SimConfig(
        train_prompts=args.train_prompts,
        heldout_prompts=args.heldout_prompts,
        clusters=args.clusters,
        skill_mean=args.skill_mean,
        skill_std=args.skill_std,
        difficulty_std=args.difficulty_std,
        lr=args.lr,
        transfer=args.transfer,
    )
    return CompareOptions(
        strategies=tuple(parse_strategies(args.strategies)),
        seeds=seeds,
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        rollouts_per_prompt=args.rollouts_per_prompt,
        budget_multiplier=args.budget_multiplier,
        backend=args.backend,
        sim=sim,
        workers=args.workers,
        target_accuracy=args.target_accuracy,
        baseline=args.baseline,
    )


def main(argv: list[str] | None = None, *, prog: str = "cobarl compare") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        options = options_from_args(args)
    except (ValueError, TypeError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.output_dir or f"runs/compare-{datetime.now():%Y%m%d-%H%M%S}")
    command = " ".join(["cobarl compare", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    try:
        runs = run_compare(options, progress=not args.no_progress)
    except BackendUnavailable as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    summary = write_report(runs, options, out, command=command, plots=not args.no_plots)
    print(f"{len(runs)} runs in {elapsed:.1f} s; report in {out}/report.md", file=sys.stderr)
    for label, e in summary["strategies"].items():
        acc, eff = e["final_heldout_accuracy"], e["effective_ratio"]
        if acc["mean"] is not None:
            print(f"  {label:24s} held-out acc {acc['mean']:.4f} ± {acc['half_width'] or 0:.4f}   "
                  f"effective ratio {eff['mean']:.3f} ± {eff['half_width'] or 0:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
