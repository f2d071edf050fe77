"""`cobarl diagnose`: which world are a model and its data in? Pass rates at k samples, how many 0/k
prompts more samples reach, and the nearest regime of the regime map.

    cobarl diagnose                                          # the default embedded task and its tiny model
    cobarl diagnose --task families-u90 --json
    cobarl diagnose --model Qwen/Qwen2.5-Math-1.5B --dataset dapo.parquet --reward math --use-vllm

For each train prompt (or ``--prompts N`` of them, at random) it samples ``--k`` rollouts at the
training temperature and scores them with the training reward, then samples ``--resample`` of the 0/k
prompts (and as many of the k/k prompts) further, up to ``--max-samples`` each, stopping a prompt at
its first success (first failure for a k/k prompt). The shares come with 95 % binomial intervals
(Clopper-Pearson unless ``--interval wilson``). Every option, the map file, the reward and the data
are checked before a model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cobarl.cli_checks import integer, number
from cobarl.diagnose import placement, report
from cobarl.diagnose.stats import INTERVALS
from cobarl.tasks.embedded import DEFAULT_TASK, TASKS


class UsageError(ValueError):
    """An option, the map, the reward or the data refused before any model loads (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cobarl diagnose", allow_abbrev=False,
        description="Measure where a model and its data sit: the pass-rate histogram at k samples, the share of "
        "0/k prompts that more samples reach (and of k/k prompts that more samples fail), and the nearest regime "
        "of the regime map (measured on the embedded task, not on your model).")
    data = p.add_argument_group("model and data (as cobarl train)")
    data.add_argument("--task", choices=tuple(TASKS), default=None,
                      help=f"embedded task (no --dataset): its train split and, without --model, its warm-started tiny "
                      f"model (built and cached on first use). Default: {DEFAULT_TASK}.")
    data.add_argument("--model", default=None, help="HF model name or local path. Default: the embedded task's tiny model.")
    data.add_argument("--dataset", default=None, help="local .parquet/.jsonl in the verl/DAPO layout; its train split as "
                      "cobarl train makes it (the last min(512, half) rows are held out and not diagnosed)")
    data.add_argument("--reward", default="exact", help="verifier: exact, math, or package.module:function (default: exact)")
    data.add_argument("--reward-timeout", type=number(0, above=True), default=30.0,
                      help="seconds one reward call may take before it scores 0 (default: 30)")
    data.add_argument("--reward-workers", type=integer(1), default=4, help="reward calls in parallel (default: 4)")
    data.add_argument("--seed", type=integer(0), default=0, help="seed of the prompts, the subsets and the sampling; "
                      "on an embedded task also which warm-started model (tiny-<task>-seed<seed>) (default: 0)")
    s = p.add_argument_group("sampling")
    s.add_argument("--k", type=integer(2), default=16, help="samples per prompt for the histogram (default: 16)")
    s.add_argument("--prompts", type=integer(1), default=None, help="diagnose a random subset of N train prompts "
                   "(default: all)")
    s.add_argument("--max-samples", type=integer(2), default=256, help="samples per resampled prompt in all, the first k "
                   "included (default: 256)")
    s.add_argument("--resample", type=integer(0), default=64, help="0/k prompts (and as many k/k prompts) to sample "
                   "further, at random; 0: none (default: 64)")
    s.add_argument("--round-size", type=integer(1), default=32, help="samples per undecided prompt per generation "
                   "call while resampling (default: 32)")
    s.add_argument("--temperature", type=number(0, above=True), default=1.0, help="sampling temperature (default: 1.0)")
    s.add_argument("--max-completion-length", type=integer(1), default=None, help="max new tokens per sample (default: "
                   "8 for the embedded tiny model, as cobarl train; 4096 with --model, as cobarl eval)")
    s.add_argument("--success", default="==1", help="when a reward counts as a success: '==1', '>=1' or '>0.5' "
                   "(default: ==1, the allocators' rule)")
    s.add_argument("--interval", choices=INTERVALS, default=INTERVALS[0], help="binomial interval of the shares "
                   f"(default: {INTERVALS[0]})")
    run = p.add_argument_group("run")
    run.add_argument("--use-vllm", "--vllm", dest="use_vllm", action="store_true", help="generate with vLLM (GPU)")
    run.add_argument("--batch-size", type=integer(1), default=None, help="sequences per HF generate call (default: 1024 "
                     "for the embedded tiny model, 64 otherwise)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument("--cpu-threads", type=integer(1), default=None, help="torch CPU threads (default: 1 for the "
                     "embedded tiny model, torch's otherwise)")
    run.add_argument("--map", dest="map_file", default=None, metavar="FILE",
                     help=f"regime map JSON (default: the packaged {placement.default_map_path().name})")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar on stderr")
    return p


def _check_options(args: argparse.Namespace) -> None:
    from cobarl.stats import success_rule

    if args.resample and args.max_samples <= args.k:
        raise UsageError(f"--max-samples {args.max_samples} must be larger than --k {args.k} to resample; raise it "
                         "or pass --resample 0")
    try:
        success_rule(args.success)
    except ValueError as e:
        raise UsageError(f"--success: {e}") from None


def _train_config(args: argparse.Namespace):
    """The `cobarl train` configuration of the same model, data, reward and sampling: validated by train's
    own checks, and read by the same data, model and thread stages."""
    from cobarl.train.config import make_config

    values = dict(model=args.model, dataset=args.dataset, task=args.task, reward=args.reward, seed=args.seed,
                  reward_timeout=args.reward_timeout, reward_workers=args.reward_workers, temperature=args.temperature,
                  device=args.device, cpu_threads=args.cpu_threads or 0, progress=False)
    if args.dataset is None and args.task is None:
        values["task"] = DEFAULT_TASK
    if args.max_completion_length is not None:
        values["max_completion_length"] = args.max_completion_length
    elif args.model is not None:
        from cobarl.evaluate.cli import DEFAULT_MAX_TOKENS

        values["max_completion_length"] = DEFAULT_MAX_TOKENS
    try:
        return make_config({k: v for k, v in values.items() if v is not None})
    except ValueError as e:
        raise UsageError(str(e).replace("invalid train config:\n  ", "").replace("\n  ", "; ")) from None


def _check_vllm(args: argparse.Namespace, device: str) -> None:
    import importlib.util

    if not args.use_vllm:
        return
    if importlib.util.find_spec("vllm") is None:
        raise UsageError("--use-vllm needs vLLM, which cannot be imported here: pip install vllm (GPU only), or drop "
                         "--use-vllm to generate with HF generate")
    if device != "cuda":
        raise UsageError("--use-vllm needs a CUDA GPU; none is available (or --device cpu was given): drop --use-vllm")


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Everything that can be refused, refused now (UsageError), before any model loads: the options, the
    map, the back-end, the device, the reward (probed on ground-truth answers, as cobarl train does) and the data."""
    from cobarl.rewards import load_reward
    from cobarl.train.build import pick_device
    from cobarl.train.data import load_splits
    from cobarl.train.rewards import probe_verifier

    _check_options(args)
    explicit = args.map_file is not None
    map_path = Path(args.map_file).expanduser() if explicit else placement.default_map_path()
    try:
        regime_map, map_note = placement.read_map(map_path, explicit=explicit)
        config = _train_config(args)
        device = pick_device(config)
        _check_vllm(args, device)
        verifier = load_reward(config.reward, timeout=config.reward_timeout, workers=config.reward_workers)
        train_ds = load_splits(config)[0]
        if args.prompts is not None and args.prompts > len(train_ds):
            raise UsageError(f"--prompts {args.prompts} exceeds the {len(train_ds)} train prompts; pass at most "
                             f"{len(train_ds)} (or leave it out to diagnose them all)")
        probe_verifier(verifier, train_ds["answer"])
    except (ValueError, ImportError, RuntimeError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    return dict(config=config, device=device, verifier=verifier, train_ds=train_ds, regime_map=regime_map,
                map_note=map_note, map_path=str(map_path))


def _load_generator(args: argparse.Namespace, config, device: str):
    """``(generator, tokenizer, model path)``: vLLM, or HF ``generate`` on ``device`` with train's thread rule."""
    from transformers.utils import logging as hf_logging

    from cobarl.models.load import load_model, resolve_model_path

    hf_logging.disable_progress_bar()
    model_path = resolve_model_path(config.model, seed=config.seed, task=config.task)
    if args.use_vllm:
        from transformers import AutoTokenizer

        from cobarl.evaluate.avgk import VLLMGenerator

        return VLLMGenerator(model_path, seed=config.seed), AutoTokenizer.from_pretrained(model_path), model_path
    from cobarl.models.generate import HFGenerator
    from cobarl.train.build import set_threads

    set_threads(config, device)
    model, tokenizer = load_model(model_path)
    model.to(device)
    batch = args.batch_size or (1024 if config.model is None else 64)
    return HFGenerator(model, tokenizer, batch_size=batch, add_special_tokens=False), tokenizer, model_path


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with the train extra; without it, no bar
        return None
    return tqdm(total=total, desc="cobarl diagnose", unit="sample", dynamic_ncols=True, file=sys.stderr)


def run_diagnosis(args: argparse.Namespace, prepared: dict[str, Any]) -> dict[str, Any]:
    """Load the model, sample, and return the diagnosis as one JSON-ready object."""
    from cobarl.diagnose.sample import Sampler, first_pass, pick, resample
    from cobarl.stats import success_rule
    from cobarl.train.rewards import make_reward_func

    started = time.perf_counter()
    config, train_ds = prepared["config"], prepared["train_ds"]
    chosen = (pick(range(len(train_ds)), args.prompts, args.seed, 0) if args.prompts is not None
              else list(range(len(train_ds))))
    data = train_ds.select([int(i) for i in chosen])
    generator, tokenizer, model_path = _load_generator(args, config, prepared["device"])
    texts = [p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in data["prompt"]]
    cap = getattr(generator, "max_new_tokens", None)
    max_tokens = cap(texts, config.max_completion_length) if callable(cap) else config.max_completion_length
    bar = _progress(args.progress, len(texts) * args.k + 2 * args.resample * max(0, args.max_samples - args.k))
    sampler = Sampler(generator, make_reward_func(prepared["verifier"], workers=config.reward_workers),
                      success_rule(args.success), temperature=config.temperature, max_tokens=max_tokens,
                      failure_limit=config.reward_failure_limit, on_done=bar.update if bar is not None else None)
    answers = list(data["answer"])
    try:
        successes = first_pass(sampler, texts, answers, args.k, args.seed)
        first = sampler.generated
        zero = pick([i for i, c in enumerate(successes) if c == 0], args.resample, args.seed, 1)
        solved = pick([i for i, c in enumerate(successes) if c == args.k], args.resample, args.seed, 2)
        more = resample(sampler, texts, answers, list(zero) + list(solved), [True] * len(zero) + [False] * len(solved),
                        k=args.k, max_samples=args.max_samples, round_size=args.round_size, seed=args.seed)
    finally:
        if bar is not None:
            bar.total = bar.n
            bar.close()
    source = dict(task=config.task, dataset=config.dataset, model=model_path, reward=config.reward,
                  backend="vllm" if args.use_vllm else "hf", device=prepared["device"], seed=args.seed,
                  temperature=config.temperature, max_completion_length=max_tokens, success=args.success)
    return report.diagnosis(successes, more, prompt_ids=list(data["prompt_id"]), k=args.k, max_samples=args.max_samples,
                            interval=args.interval, available=len(train_ds), rollouts_first=first,
                            rollouts_total=sampler.generated, reward_failures=sampler.reward_failures,
                            source=source, seconds=time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cobarl diagnose`` / ``python -m cobarl.diagnose``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        prepared = prepare(args)
    except UsageError as e:
        print(f"cobarl diagnose: error: {e}", file=sys.stderr)
        return 2
    try:
        result = run_diagnosis(args, prepared)
    except KeyboardInterrupt:
        print("cobarl diagnose: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        print(f"cobarl diagnose: error: {e}", file=sys.stderr)
        return 1
    finally:
        getattr(prepared["verifier"].fn, "close", lambda: None)()  # math-verify's worker processes
    result["nearest_regime"] = report.placement_result(result, prepared["regime_map"])
    result["map"] = {"path": prepared["map_path"], "note": prepared["map_note"] or None,
                     "measured_on": (prepared["regime_map"] or {}).get("measured_on")}
    print(json.dumps(report.clean(result), indent=2) if args.json else report.text(result))
    return 0
