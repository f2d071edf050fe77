"""Measure the embedded task's regime requirements with uniform GRPO only (no allocation strategy).

    .venv/bin/python scripts/arena_check.py --seeds 5 --threads 1,2 --out runs/arena-check

For every seed and every ``--cpu-threads`` setting, one ``cobarl train --allocator uniform --eval-every 12
--transitions`` run through the real command line, each thread setting with its own model cache (so the
warm-start itself runs with those threads too: the stand-in for another machine's floating-point order).
From each run it reads, and checks against README "The embedded task":

- visits per train prompt (>= 10);
- share of the final held-out gain made by the end of epoch 1 (<= 40 %) and in the second half (>= 25 %),
  greedy and sampled;
- the warm-started model's spread over train prompts, 16 samples at T = 1: 0/16 (>= 25 %), 1-4/16 (>= 15 %),
  16/16 (>= 10 %);
- greedy held-out accuracy on the families the warm-start taught correctly (mistake rate < 0.5; >= 90 %);
- held-out greedy after RL (>= 0.5) and its gain (>= +15 points on seed 0, >= +10 on every run);
- wall time.

Writes ``OUT/arena_check.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

GREEDY, SAMPLED = "eval/heldout_greedy_accuracy", "eval/heldout_accuracy"


def run_one(seed: int, threads: int, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"uniform-seed{seed}-threads{threads}"
    env = {**os.environ, "COBARL_CACHE": str(out / f"cache-threads{threads}")}
    cmd = [str(Path(sys.executable).parent / "cobarl"), "train", "--allocator", "uniform", "--seed", str(seed), "--cpu-threads",
           str(threads), "--eval-every", "12", "--transitions", "--no-progress", "--output-dir", str(run_dir), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return measure(run_dir, Path(env["COBARL_CACHE"]), seed, threads, time.perf_counter() - start)


def measure(run_dir: Path, cache: Path, seed: int, threads: int, wall: float) -> dict:
    import yaml

    from cobarl.tasks import families

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    before = json.loads((run_dir / "eval_before.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if GREEDY in r}
    evals[summary["steps"]] = {**evals.get(summary["steps"], {}), **summary["accuracy_after"]}
    epoch = math.ceil(config["train_size"] / config["prompts_per_step"])
    half = summary["steps"] // 2
    buckets = json.loads((run_dir / "train_buckets_before.json").read_text())
    n = len(buckets)
    taught = [k for k, q in enumerate(families.MISTAKE_RATES) if q < 0.5]
    taught_acc = sum(before[f"{GREEDY}/level_{k}"] for k in taught) / len(taught)  # equal-size families

    def share(key: str, step: int) -> float:
        at = max((s for s in evals if s <= step), default=None)
        value = evals[at][key] if at is not None else before[key]
        gain = summary["accuracy_after"][key] - before[key]
        return (value - before[key]) / gain if gain > 0 else math.nan

    warm_file = cache / f"tiny-{config['task']}-seed{seed}" / "warm_start.json"
    warm = json.loads(warm_file.read_text()) if warm_file.is_file() else {"warm_start/seconds": math.nan}
    return {
        "seed": seed, "threads": threads,
        "visits": summary["steps"] * config["prompts_per_step"] / config["train_size"],
        "epoch1_share_greedy": share(GREEDY, epoch), "epoch1_share_sampled": share(SAMPLED, epoch),
        "second_half_share_greedy": 1 - share(GREEDY, half), "second_half_share_sampled": 1 - share(SAMPLED, half),
        "hist_0": buckets.count(0) / n, "hist_1_4": buckets.count(1) / n, "hist_16": buckets.count(4) / n,
        "taught_correct_greedy": taught_acc,
        "greedy_before": before[GREEDY], "greedy_after": summary["accuracy_after"][GREEDY],
        "sampled_before": before[SAMPLED], "sampled_after": summary["accuracy_after"][SAMPLED],
        "warm_start_s": warm["warm_start/seconds"], "run_s": summary["seconds"], "wall_s": wall,
    }


def checks(r: dict) -> list[str]:
    """The requirements a run misses (empty: it meets them all)."""
    gain = 100 * (r["greedy_after"] - r["greedy_before"])
    tests = {
        "visits >= 10": r["visits"] >= 10,
        "epoch-1 share <= 40%": max(r["epoch1_share_greedy"], r["epoch1_share_sampled"]) <= 0.40,
        "second-half share >= 25%": min(r["second_half_share_greedy"], r["second_half_share_sampled"]) >= 0.25,
        "0/16 >= 25%": r["hist_0"] >= 0.25, "1-4/16 >= 15%": r["hist_1_4"] >= 0.15, "16/16 >= 10%": r["hist_16"] >= 0.10,
        "taught-correct >= 90%": r["taught_correct_greedy"] >= 0.90,
        "greedy after >= 0.5": r["greedy_after"] >= 0.5,
        "greedy gain >= +10": gain >= 10, **({"greedy gain >= +15 (seed 0)": gain >= 15} if r["seed"] == 0 else {}),
    }
    return [name for name, ok in tests.items() if not ok]


def table(results: list[dict]) -> str:
    lines = ["| seed | threads | visits | hist 0 / 1-4 / 16 | taught-correct | greedy before -> after | sampled before -> after "
             "| epoch-1 share g / s | 2nd-half share g / s | warm-start s | RL run s | misses |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['seed']} | {r['threads']} | {r['visits']:.1f} | {r['hist_0']:.2f} / {r['hist_1_4']:.2f} / {r['hist_16']:.2f} "
            f"| {r['taught_correct_greedy']:.3f} | {r['greedy_before']:.3f} -> {r['greedy_after']:.3f} "
            f"({100 * (r['greedy_after'] - r['greedy_before']):+.1f}) | {r['sampled_before']:.3f} -> {r['sampled_after']:.3f} "
            f"| {r['epoch1_share_greedy']:.2f} / {r['epoch1_share_sampled']:.2f} "
            f"| {r['second_half_share_greedy']:.2f} / {r['second_half_share_sampled']:.2f} "
            f"| {r['warm_start_s']:.0f} | {r['run_s']:.0f} | {', '.join(checks(r)) or 'none'} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", default="1,2", help="Comma-separated --cpu-threads settings.")
    p.add_argument("--out", type=Path, default=Path("runs/arena-check"))
    p.add_argument("--workers", type=int, default=2, help="Parallel runs of the 1-thread setting (others run alone).")
    p.add_argument("train_args", nargs="*", help="Extra cobarl train options (after --).")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        workers = max(1, args.workers // threads)  # keep threads x parallel runs within the cores
        with ThreadPoolExecutor(workers) as pool:
            results += list(pool.map(lambda s: run_one(s, threads, args.out, args.train_args), range(args.seeds)))
        (args.out / "arena_check.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    missed = [r for r in results if checks(r)]
    print(f"\n{len(results) - len(missed)} of {len(results)} runs meet every requirement")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
