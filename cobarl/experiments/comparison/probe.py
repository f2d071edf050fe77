"""``cobarl probe``: does it matter, on this task, which prompts get the rollouts? A strategy-neutral check.

For each seed, the train prompts' units (the task's families when it has them, else single prompts)
are split into a favoured and an unfavoured half, stratified by starting pass rate: the units are
sorted by it, paired with their neighbour, and a seeded coin favours one of each pair, so both halves
span the range. Two runs of ``cobarl train`` start from the same model with the same options:

- **probe**: a fixed allocation gives every favoured prompt ``weight`` (3) times the rollouts of an
  unfavoured one, at the run's total per step;
- **placebo**: uniform GRPO, measured with the same split (what the split alone does).

Before and after each run, every train prompt is sampled 16 times (held-out prompts 8 times) at the
training temperature. The favoured half's gain over the unfavoured half's (means over units of each
half) is the ratio. The task is allocation-sensitive when, over seeds, the probe's mean ratio is at
least ``min_ratio`` (1.5) with a 95 % interval above 1, and above the placebo's (paired interval of
the difference above 0) — on train prompts, and on held-out prompts of the favoured families when the
task has families. No allocation strategy is involved, so the check can be run while a task is being
designed without looking at which strategy wins.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.allocation import Allocation
from cobarl.allocator import Allocator
from cobarl.stats import as_id_list

TRAIN_SAMPLES = 16
HELD_OUT_SAMPLES = 8
ARMS = ("placebo", "probe")


# --- pure functions -------------------------------------------------------------------------------------


def stratified_half(start_rates: Mapping[Hashable, float], seed: int) -> set:
    """The favoured half of the units: sorted by starting pass rate (ties by unit), paired with the next
    one, one of each pair chosen by a seeded coin (an odd last unit is favoured on a coin too).

    >>> sorted(stratified_half({"a": 0.0, "b": 0.1, "c": 0.5, "d": 0.9}, seed=0)) in (["a", "c"], ["a", "d"], ["b", "c"], ["b", "d"])
    True
    """
    units = sorted(start_rates, key=lambda u: (start_rates[u], str(u)))
    coin = random.Random(f"cobarl-probe-{seed}")
    favoured = set()
    for i in range(0, len(units), 2):
        pair = units[i:i + 2]
        if len(pair) == 2:
            favoured.add(pair[coin.random() < 0.5])
        elif coin.random() < 0.5:
            favoured.add(pair[0])
    return favoured


def weighted_counts(favoured: Sequence[bool], total: int, weight: float) -> np.ndarray:
    """``[M]`` counts summing to ``total``, proportional to ``weight`` (favoured) or 1; largest remainder
    rounding, ties to the earlier prompt. Refused when a prompt would get no rollout.

    >>> weighted_counts([True] * 8 + [False] * 8, 128, 3.0).tolist()
    [12, 12, 12, 12, 12, 12, 12, 12, 4, 4, 4, 4, 4, 4, 4, 4]
    """
    w = np.where(np.asarray(favoured, dtype=bool), float(weight), 1.0)
    share = total * w / w.sum()
    counts = np.floor(share).astype(np.int64)
    order = np.lexsort((np.arange(w.size), -(share - counts)))  # largest fractional part first
    counts[order[:int(total - counts.sum())]] += 1
    if (counts < 1).any():
        raise ValueError(f"{total} rollouts over {w.size} prompts at {weight:g}:1 leave a prompt without a rollout; "
                         "raise --rollouts-per-prompt")
    return counts


def half_gains(before: Mapping[Hashable, float], after: Mapping[Hashable, float], favoured: set) -> tuple[float, float]:
    """(favoured, unfavoured) mean gain over the units of each half (per-unit pass rates)."""
    fav = [after[u] - before[u] for u in before if u in favoured]
    other = [after[u] - before[u] for u in before if u not in favoured]
    return float(np.mean(fav)), float(np.mean(other))


def unit_rates(scores: np.ndarray, units: Sequence[Hashable]) -> dict:
    """Per unit, the mean of its prompts' ``[prompts, samples]`` scores."""
    per_prompt = np.asarray(scores, dtype=np.float64).mean(axis=1)
    out: dict = {}
    for u, s in zip(units, per_prompt):
        out.setdefault(u, []).append(s)
    return {u: float(np.mean(v)) for u, v in out.items()}


def ratio(gains: tuple[float, float]) -> float:
    """Favoured gain / unfavoured gain; NaN when the unfavoured half did not improve (no ratio to read)."""
    fav, other = gains
    return fav / other if other > 1e-9 else math.nan


def verdict(probe: Sequence[float], placebo: Sequence[float], min_ratio: float) -> dict[str, Any]:
    """Pass when the probe's mean ratio is >= ``min_ratio``, its 95 % interval excludes 1, and the paired
    difference to the placebo's ratio has a 95 % interval above 0; a seed with no ratio fails the check."""
    from cobarl.experiments.report.report_stats import mean_ci

    ci = mean_ci(probe)
    diff = mean_ci([a - b for a, b in zip(probe, placebo)])
    placebo_ci = mean_ci(placebo)
    undefined = sum(not math.isfinite(x) for x in list(probe) + list(placebo))
    ok = (undefined == 0 and ci["n"] >= 2 and ci["mean"] >= min_ratio and ci["ci95"][0] > 1
          and diff["ci95"][0] > 0)
    return {"probe": ci, "placebo": placebo_ci, "probe_minus_placebo": diff, "undefined_seeds": undefined,
            "min_ratio": min_ratio, "passed": bool(ok)}


# --- the fixed allocation -------------------------------------------------------------------------------


class ProbeAllocator(Allocator):
    """Uniform GRPO's allocator, except that each plan gives favoured prompts ``weight`` x the rollouts of
    the others (statistics are still observed and saved, so metrics and checkpoints look as usual)."""

    def __init__(self, config, favoured_ids: set, weight: float) -> None:
        super().__init__(config)
        self.favoured_ids, self.weight = set(favoured_ids), weight

    def plan(self, prompt_ids: Sequence[Any], total_budget: int) -> Allocation:
        start = time.perf_counter()
        ids = as_id_list(prompt_ids)  # as Allocator.plan takes them: numpy ints (the simulator's ids) become ints
        counts = weighted_counts([pid in self.favoured_ids for pid in ids], total_budget, self.weight)
        self._plan_params = self.params()
        self.last = Allocation(counts=counts, objective=0.0, method="probe",
                               diagnostics={"seconds": time.perf_counter() - start,
                                            "pass_rates": self.pass_rates(ids), "seen": self.seen(ids)})
        return self.last


# --- runs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeOptions:
    """What ``cobarl probe`` runs: ``train`` are `cobarl train` option values (flat, as on its command line)."""

    train: dict[str, Any]
    seeds: tuple[int, ...]
    output_dir: Path
    weight: float = 3.0
    min_ratio: float = 1.5
    workers: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


def _config(options: ProbeOptions, seed: int, arm: str | None = None):
    from cobarl.train.config import make_config

    values = {**options.train, "seed": seed, "strategy": "uniform", "progress": False}
    if arm is not None:
        values["output_dir"] = str(options.output_dir / "runs" / f"{arm}-seed{seed}")
    return make_config(values)


def _measure(model, tokenizer, config, train_ds, eval_ds, verifier) -> tuple[np.ndarray, np.ndarray]:
    """``[train prompts, 16]`` and ``[held-out prompts, 8]`` scores at the training temperature."""
    from cobarl.train.evaluate import sample_scores

    kw = dict(max_new_tokens=config.max_completion_length, temperature=config.temperature, seed=config.seed)
    return (sample_scores(model, tokenizer, train_ds, verifier, num_samples=TRAIN_SAMPLES, **kw),
            sample_scores(model, tokenizer, eval_ds, verifier, num_samples=HELD_OUT_SAMPLES, **kw))


def _data(config):
    """(train, held-out, verifier) of one run's config; HF's loading bars off (they drown the log)."""
    from transformers.utils import logging as hf_logging

    from cobarl.rewards import load_reward
    from cobarl.train.data import load_splits

    hf_logging.disable_progress_bar()
    train_ds, eval_ds, _ = load_splits(config)
    verifier = load_reward(config.reward, timeout=config.reward_timeout, workers=1)
    return train_ds, eval_ds, verifier


def _units(dataset) -> list:
    return list(dataset["family"]) if "family" in dataset.column_names else list(dataset["prompt_id"])


def _start(options: ProbeOptions, seed: int) -> dict[str, Any]:
    """The starting model's scores and the split, for one seed (a worker process)."""
    from cobarl.models.load import load_model, resolve_model_path
    from cobarl.train.build import pick_device, set_threads

    config = _config(options, seed)
    set_threads(config, pick_device(config))
    train_ds, eval_ds, verifier = _data(config)
    model, tokenizer = load_model(resolve_model_path(config.model, seed=seed, task=config.task))
    train_scores, held_scores = _measure(model, tokenizer, config, train_ds, eval_ds, verifier)
    units = _units(train_ds)
    favoured = stratified_half(unit_rates(train_scores, units), seed)
    return {"train": train_scores.tolist(), "held_out": held_scores.tolist(),
            "train_units": units, "held_out_units": _units(eval_ds), "families": "family" in train_ds.column_names,
            "favoured_units": sorted(favoured, key=str),
            "favoured_ids": [pid for pid, u in zip(train_ds["prompt_id"], units) if u in favoured]}


def _arm(options: ProbeOptions, seed: int, arm: str, favoured_ids: list) -> dict[str, Any]:
    """One run (``probe`` or ``placebo``) and the scores of its final model (a worker process)."""
    from cobarl.models.load import load_model
    from cobarl.train.checkpoints import checkpoint_step, last_complete_checkpoint
    from cobarl.train.run import run

    config = _config(options, seed, arm)
    allocator = ProbeAllocator(config.strategy_config(), set(favoured_ids), options.weight) if arm == "probe" else None
    summary = run(config, log=lambda _msg: None, allocator=allocator)
    checkpoint = last_complete_checkpoint(Path(summary.run_dir))
    if checkpoint is None or checkpoint_step(checkpoint) != config.max_steps:
        raise RuntimeError(f"{summary.run_dir}: no checkpoint of the final step {config.max_steps} to measure")
    model, tokenizer = load_model(str(checkpoint))
    train_ds, eval_ds, verifier = _data(config)
    train_scores, held_scores = _measure(model, tokenizer, config, train_ds, eval_ds, verifier)
    return {"train": train_scores.tolist(), "held_out": held_scores.tolist(), "rollouts": summary.rollouts,
            "heldout_greedy_before": summary.accuracy_before.get(M.EVAL_HELDOUT_GREEDY),
            "heldout_greedy_after": summary.accuracy_after.get(M.EVAL_HELDOUT_GREEDY),
            "seconds": summary.seconds}


def _pool_map(fn, jobs: list[tuple], workers: int) -> list:
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    from cobarl.experiments.comparison.pool import ignore_sigint, stop_pool

    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=ignore_sigint)
    try:
        futures = [pool.submit(fn, *job) for job in jobs]
        out = [f.result() for f in futures]
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown()
    return out


def run_probe(options: ProbeOptions, log=print) -> dict[str, Any]:
    """Every seed's split, probe and placebo runs; the ratios and the verdict (also written to
    ``output_dir/summary.json`` and ``report.md``)."""
    started = time.perf_counter()
    log(f"cobarl probe: {len(options.seeds)} seed(s); building and measuring the starting models")
    starts = _pool_map(_start, [(options, s) for s in options.seeds], options.workers)
    log("cobarl probe: probe and placebo runs")
    jobs = [(options, s, arm, start["favoured_ids"]) for s, start in zip(options.seeds, starts) for arm in ARMS]
    ends = dict(zip(((s, arm) for _, s, arm, _ in jobs), _pool_map(_arm, jobs, options.workers)))
    per_seed, ratios = [], {arm: {"train": [], "held_out": []} for arm in ARMS}
    has_families = starts[0]["families"]  # one task for every seed
    for seed, start in zip(options.seeds, starts):
        tu, hu = start["train_units"], start["held_out_units"]  # each seed draws its own prompts
        favoured = set(start["favoured_units"])
        row: dict[str, Any] = {"seed": seed, "favoured_units": start["favoured_units"]}
        for arm in ARMS:
            end = ends[(seed, arm)]
            gains = {"train": half_gains(unit_rates(np.array(start["train"]), tu), unit_rates(np.array(end["train"]), tu), favoured)}
            if has_families:
                gains["held_out"] = half_gains(unit_rates(np.array(start["held_out"]), hu),
                                               unit_rates(np.array(end["held_out"]), hu), favoured)
            row[arm] = {k: {"favoured_gain": g[0], "unfavoured_gain": g[1], "ratio": ratio(g)} for k, g in gains.items()}
            row[arm].update(rollouts=end["rollouts"], heldout_greedy_before=end["heldout_greedy_before"],
                            heldout_greedy_after=end["heldout_greedy_after"])
            for k, g in gains.items():
                ratios[arm][k].append(ratio(g))
        per_seed.append(row)
    measures = ["train"] + (["held_out"] if has_families else [])
    verdicts = {k: verdict(ratios["probe"][k], ratios["placebo"][k], options.min_ratio) for k in measures}
    summary = {
        "units": "families" if has_families else "prompts",
        "seeds": list(options.seeds), "weight": options.weight, "min_ratio": options.min_ratio,
        "train_options": dict(options.train), "per_seed": per_seed,
        "verdict": verdicts, "passed": all(v["passed"] for v in verdicts.values()),
        "seconds": time.perf_counter() - started, **options.extra,
    }
    write_probe(summary, options.output_dir)
    return summary


# --- output ---------------------------------------------------------------------------------------------


def _fmt_ci(ci: dict) -> str:
    lo, hi = ci["ci95"]
    return f"{ci['mean']:.2f} [{lo:.2f}, {hi:.2f}]" if math.isfinite(ci["mean"]) and math.isfinite(lo) else "n/a"


def verdict_lines(summary: dict[str, Any]) -> list[str]:
    names = {"train": "train prompts (16 samples)", "held_out": "held-out prompts of the same families (8 samples)"}
    lines = []
    for k, v in summary["verdict"].items():
        lines.append(f"{names[k]}: favoured/unfavoured gain ratio {_fmt_ci(v['probe'])} (placebo {_fmt_ci(v['placebo'])}; "
                     f"probe - placebo {_fmt_ci(v['probe_minus_placebo'])}) -> {'pass' if v['passed'] else 'FAIL'}"
                     + (f" ({v['undefined_seeds']} run(s) without a ratio: their unfavoured half did not improve)"
                        if v["undefined_seeds"] else ""))
    lines.append(f"allocation sensitivity: {'PASSED' if summary['passed'] else 'FAILED'} (mean ratio >= "
                 f"{summary['min_ratio']:g} with its 95 % interval above 1 and above the placebo, on every measure)")
    return lines


def write_probe(summary: dict[str, Any], out: Path) -> None:
    from cobarl.experiments.report.report_stats import _clean
    from cobarl.io import write_json, write_text

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", _clean(summary), indent=2)
    rows = ["| seed | arm | measure | favoured gain | unfavoured gain | ratio | held-out greedy before -> after |",
            "|---|---|---|---|---|---|---|"]
    for r in summary["per_seed"]:
        for arm in ARMS:
            a = r[arm]
            for k in [m for m in ("train", "held_out") if m in a]:
                g = a[k]
                greedy = f"{a['heldout_greedy_before']:.3f} -> {a['heldout_greedy_after']:.3f}" if k == "train" else ""
                rows.append(f"| {r['seed']} | {arm} | {k} | {g['favoured_gain']:+.3f} | {g['unfavoured_gain']:+.3f} | "
                            f"{g['ratio']:.2f} | {greedy} |")
    text = "\n".join([
        "# cobarl probe: allocation sensitivity", "",
        f"Command: `{summary.get('command', 'cobarl probe')}`", "",
        f"Units split: {summary['units']}; favoured weight {summary['weight']:g}x; seeds {summary['seeds']}; "
        f"{summary['seconds']:.0f} s.", "",
        *[f"- {line}" for line in verdict_lines(summary)], "",
        "Ratios are the favoured half's mean gain over the unfavoured half's (means over units). *probe*: the "
        "favoured prompts got the weight x the rollouts at the same total; *placebo*: uniform GRPO measured with "
        "the same split.", "", *rows, "",
    ])
    write_text(out / "report.md", text)


# --- command line ---------------------------------------------------------------------------------------

# `cobarl train` options the probe sets itself.
_PROBE_SETS = {"seed": "--seeds / --seed-list", "strategy": "the probe's fixed allocation and uniform",
               "output_dir": "the probe's --output-dir", "resume": "a fresh --output-dir", "fresh": "a fresh --output-dir"}


def build_parser():
    import argparse

    from cobarl.experiments.comparison.pool import default_workers

    p = argparse.ArgumentParser(
        prog="cobarl probe", allow_abbrev=False,
        description="Strategy-neutral check that where the rollouts go matters on a task: per seed, a fixed "
        "allocation gives a stratified random half of the train units (families, or prompts) WEIGHT x the rollouts "
        "of the other half, and a uniform run measures the same split as a placebo. Any other option is a "
        "cobarl train option (task, model, --dataset, steps, learning rate, ...) and applies to both runs.",
        epilog="Example: cobarl probe --seeds 5   (the embedded default task, ~1 min per run on 2 cores)",
    )
    p.add_argument("--seeds", type=int, default=5, help="Number of seeds, 0..N-1 (default: 5).")
    p.add_argument("--seed-list", default=None, help="Explicit comma-separated seeds, e.g. 3,7,11.")
    p.add_argument("--weight", type=float, default=3.0, help="Rollouts of a favoured prompt per unfavoured one (default: 3).")
    p.add_argument("--min-ratio", type=float, default=1.5, help="Gain ratio the task must reach (default: 1.5).")
    p.add_argument("--workers", type=int, default=default_workers(), help="Parallel runs (default: %(default)s).")
    p.add_argument("--output-dir", default=None, help="Report folder (default: runs/probe-<timestamp>).")
    return p


def options_from_argv(argv: list[str]) -> ProbeOptions:
    """Every option checked, for every seed and arm, before any model is built (ValueError says what and how)."""
    import shlex
    from datetime import datetime

    from cobarl.train.cli import build_parser as train_parser
    from cobarl.train.config import strategy_option_fields
    from cobarl.train.config_files import load_yaml

    args, rest = build_parser().parse_known_args(argv)
    seeds = (tuple(int(s) for s in args.seed_list.split(",")) if args.seed_list else tuple(range(args.seeds)))
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"the probe needs at least 2 distinct seeds for an interval, got {list(seeds)}")
    if not all(v > 1 and math.isfinite(v) for v in (args.weight, args.min_ratio)) or args.workers < 1:
        raise ValueError(f"--weight and --min-ratio must be > 1 and finite, and --workers >= 1; got --weight "
                         f"{args.weight:g}, --min-ratio {args.min_ratio:g}, --workers {args.workers}")
    values = vars(train_parser().parse_args(rest))
    yaml_path = values.pop("config", None)
    values = {**(load_yaml(yaml_path) if yaml_path else {}), **values}
    values = {("strategy" if k == "allocator" else k): v for k, v in values.items()}  # a file's old name
    taken = [k for k in values if k in _PROBE_SETS]
    if taken:
        raise ValueError("; ".join(f"{k} is set by the probe ({_PROBE_SETS[k]})" for k in taken))
    # The probe's counts are its fixed weights (the placebo is uniform): an allocator option such as
    # --max-budget would be silently ignored, so it is refused.
    allocator_options = sorted(set(values) & set(strategy_option_fields()))
    if allocator_options:
        raise ValueError(f"{', '.join(allocator_options)}: the probe allocates by its fixed weights (--weight), so "
                         "strategy options have no effect; leave them out")
    out = Path(args.output_dir or f"runs/probe-{datetime.now():%Y%m%d-%H%M%S}")
    if (out / "summary.json").exists() or (out / "runs").exists():
        raise ValueError(f"{out} already holds a probe; pick another --output-dir")
    options = ProbeOptions(train=values, seeds=seeds, output_dir=out, weight=args.weight, min_ratio=args.min_ratio,
                           workers=args.workers, extra={"command": " ".join(["cobarl probe", *map(shlex.quote, argv)])})
    for seed in seeds:
        for arm in ARMS:
            _config(options, seed, arm)
    from cobarl.train.rewards import probe_verifier

    _, eval_ds, verifier = _data(_config(options, seeds[0]))  # as cobarl train does, before any model
    probe_verifier(verifier, eval_ds["answer"])
    return options


def main(argv: list[str] | None = None) -> int:
    import sys

    from cobarl.signals import Terminated, sigterm_as_interrupt

    try:
        options = options_from_argv(sys.argv[1:] if argv is None else argv)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"cobarl probe: error: {err}", file=sys.stderr)
        return 2
    try:
        with sigterm_as_interrupt():
            summary = run_probe(options, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except KeyboardInterrupt as stop:
        print(f"cobarl probe: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}; nothing summarised "
              f"(the finished runs are under {options.output_dir / 'runs'})", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    for line in verdict_lines(summary):
        print(line)
    print(f"report: {options.output_dir / 'report.md'}")
    return 0 if summary["passed"] else 1
