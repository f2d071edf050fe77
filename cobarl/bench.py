"""``cobarl bench allocate``: the default solver against the heap (Algorithm 1) and DP, same inputs.

Every method solves the same instances in one process, so the ratios are measured side by side.
Reports the median wall time of ``--repeats`` runs and checks that the objectives are identical.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import tracemalloc

import numpy as np

import cobarl
from cobarl.cli_checks import integer

# (prompts, total budget, methods): the paper's Table 4 setting, and "internet scale".
SETTINGS = {
    "paper": (512, 8192, ("threshold", "heap", "dp")),
    "internet": (65_536, 1_048_576, ("threshold", "heap")),
}


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_allocate(settings: list[str], repeats: int, seed: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(seed)
    for name in settings:
        m, total, methods = SETTINGS[name]
        # U-shaped pass rates, as a base model on a math set: many prompts near 0 and near 1.
        p = rng.beta(0.5, 0.5, size=m)
        value = cobarl.CobaValue(alpha=7.26, beta=3.74, tau=8.0)
        results = {}
        for method in methods:
            # DP and the heap at internet scale take seconds to minutes: time them once.
            reps = repeats if method == "threshold" else (1 if method == "dp" or m > 10_000 else min(repeats, 5))
            seconds, res = _time(
                lambda method=method: cobarl.allocate(p, total, min_budget=2, max_budget=128, value=value, method=method),
                reps,
            )
            results[method] = (seconds, res, reps)
        # Peak Python-heap memory of one default solve (numpy allocations are traced too).
        tracemalloc.start()
        cobarl.allocate(p, total, min_budget=2, max_budget=128, value=value)
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        base_s, base, _ = results["threshold"]
        for method, (seconds, res, reps) in results.items():
            rows.append(
                {
                    "setting": name,
                    "prompts": m,
                    "total_budget": total,
                    "method": method,
                    "median_s": seconds,
                    "repeats": reps,
                    "speedup_of_threshold": seconds / base_s,
                    "objective": res.objective,
                    "same_objective": res.objective == base.objective,
                    "same_counts": bool(np.array_equal(res.counts, base.counts)),
                    "threshold_peak_mib": peak_mib,
                }
            )
    return rows


def _settings(text: str) -> list[str]:
    """``--settings``: a comma list of `SETTINGS` names."""
    settings = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        given = f"unknown setting(s) {', '.join(unknown)}" if unknown else "no setting given"
        raise argparse.ArgumentTypeError(f"{given}; valid: {', '.join(SETTINGS)}")
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cobarl bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True, metavar="allocate|rounds")
    alloc = sub.add_parser("allocate", help="allocation solvers: threshold (default) vs heap vs DP")
    alloc.add_argument("--settings", type=_settings, default="paper,internet", help="comma list of: " + ", ".join(SETTINGS))
    alloc.add_argument("--repeats", type=integer(1), default=21, help="runs per timing of the default solver (median)")
    alloc.add_argument("--seed", type=integer(0), default=0)
    alloc.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    rounds = sub.add_parser("rounds", help="the same rollouts in one generation call, in rounds, and prompt by prompt")
    rounds.add_argument("--prompts", type=integer(1), default=16)
    rounds.add_argument("--rollouts", type=integer(1), default=32, help="rollouts per prompt in all")
    rounds.add_argument("--rounds", type=integer(1), default=4)
    rounds.add_argument("--repeats", type=integer(1), default=7)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.what == "rounds":
        from cobarl.bench_rounds import bench_rounds

        if args.rollouts % args.rounds:
            raise SystemExit(f"cobarl bench rounds: --rollouts ({args.rollouts}) must be a multiple of --rounds ({args.rounds})")
        out = bench_rounds(args.prompts, args.rollouts, args.rounds, args.repeats)
        print(f"# {platform.processor() or platform.machine()}, 1 torch thread; {out['prompts']} prompts x "
              f"{out['rollouts_per_prompt']} rollouts, {out['rounds']} rounds, median of {out['repeats']}")
        for name, seconds in out["median_s"].items():
            print(f"{name:11} {seconds:8.3f} s   {out['ratio_to_one_call'][name]:5.2f} x one call")
        return 0
    rows = bench_allocate(args.settings, args.repeats, args.seed)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"{'setting':9} {'M':>6} {'B_total':>9} {'method':10} {'median':>11} {'x threshold':>12} {'objective':>14}  same")
    peaks = {r["setting"]: r["threshold_peak_mib"] for r in rows}
    for r in rows:
        print(
            f"{r['setting']:9} {r['prompts']:>6} {r['total_budget']:>9} {r['method']:10} "
            f"{r['median_s'] * 1e3:>9.3f}ms {r['speedup_of_threshold']:>11.1f}x {r['objective']:>14.6f}  "
            f"objective={r['same_objective']} counts={r['same_counts']}"
        )
    for setting, peak in peaks.items():
        print(f"# {setting}: peak traced memory of one threshold solve {peak:.2f} MiB")
    return 0
