"""`cobarl eval`: avg@k and pass@k of a model on math benchmarks.

    cobarl eval                                            # embedded tiny model on its task's held-out split
    cobarl eval --model runs/train-X                       # a training run's latest checkpoint
    cobarl eval --model Qwen/Qwen2.5-Math-1.5B --benchmarks aime24 aime25 amc23 math500 olympiadbench minerva
    cobarl eval --model ./ckpt --benchmarks aime24=data/aime24.parquet my.jsonl --k 4 --max-tokens 2048

A benchmark is a name of `cobarl.data.BENCHMARKS` (fetched from the hub, network needed), ``NAME=FILE``
(a local file in that benchmark's layout), a bare ``FILE`` (layout detected, named after the file),
or an embedded task (``families-v4``, ``arith-v3``: its held-out split; without ``--model``, that task's tiny model). Defaults follow the papers: k=16, temperature 1.0,
top-p 0.9. Results (per benchmark and their average) are printed and written as JSON. Every option
and the output path are checked before the model is loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cobarl.cli_checks import integer, number, writable_dir
from cobarl.io import write_json, write_text
from cobarl.tasks.embedded import DEFAULT_TASK, TASKS

DEFAULT_MAX_TOKENS = 4096
"""Completion cap for real models (the embedded tiny model uses its own, a few tokens)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cobarl eval", description="avg@k / pass@k of a model on math benchmarks.")
    p.add_argument("--model", help="save_pretrained directory, hub name, or a `cobarl train` run directory "
                   "(its latest checkpoint-N). Default: the embedded tiny model.")
    p.add_argument("--benchmarks", nargs="+", default=[DEFAULT_TASK], metavar="BENCH",
                   help="NAME (aime24, aime25, amc23, math500, olympiadbench, minerva, dapo-math-17k: hub), "
                   f"NAME=FILE, FILE (.parquet/.jsonl/.json), or an embedded task ({', '.join(TASKS)}: its held-out "
                   f"split). Default: {DEFAULT_TASK}.")
    p.add_argument("--k", type=integer(1), default=16, help="samples per problem (default: 16)")
    p.add_argument("--temperature", type=number(0), default=1.0, help="sampling temperature; 0 = greedy (default: 1.0)")
    p.add_argument("--top-p", type=number(0, 1, above=True), default=0.9, help="nucleus sampling (default: 0.9)")
    p.add_argument("--max-tokens", type=integer(1), default=None,
                   help=f"completion cap (default: {DEFAULT_MAX_TOKENS}; the tiny model's own for the embedded model)")
    p.add_argument("--template", default="auto", choices=["auto", "raw", "boxed", "dapo"],
                   help="instruction around each problem; auto = raw for an embedded task, boxed otherwise. The tokenizer's "
                   "chat template, if any, is applied on top.")
    p.add_argument("--system", default=None, help="system message (chat models)")
    p.add_argument("--reward", default="auto",
                   help="exact, math, or package.module:function; auto = exact for an embedded task, math otherwise")
    p.add_argument("--limit", type=integer(1), default=None, help="first N problems of each benchmark")
    p.add_argument("--layout", default="auto", help="layout of FILE benchmarks (default: detect)")
    p.add_argument("--split", default=None, help="hub split (default: the benchmark's own)")
    p.add_argument("--batch-size", type=integer(1), default=64, help="sequences per generate call (HF backend)")
    p.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"],
                   help="auto = vLLM when installed and a GPU is present, else HF generate")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--cpu-threads", type=integer(1), default=None, help="torch threads on CPU (default: 1 for tiny models)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--verify-timeout", type=number(0, above=True), default=5.0, help="seconds per answer for the math reward")
    p.add_argument("--verify-workers", type=integer(1), default=1, help="math-verify worker processes")
    p.add_argument("--reward-timeout", type=number(0, above=True), default=30.0, help="seconds per call for a user reward")
    p.add_argument("--output", "-o", default=None,
                   help="results JSON path (default: runs/eval-<time>/results.json)")
    p.add_argument("--save-completions", action="store_true", help="also write completions.jsonl next to the results")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return p


def resolve_eval_model(model: str | None, *, seed: int = 0, task: str | None = None) -> str:
    """A model directory, a run directory (-> its highest ``checkpoint-N`` with weights), a hub name, or
    (``model`` None) the tiny model of the embedded ``task``."""
    from cobarl.models.load import resolve_model_path

    if model is not None:
        path = Path(model).expanduser()
        if path.is_dir() and not (path / "config.json").is_file():
            checkpoints = sorted(
                (int(c.name.split("-", 1)[1]), c) for c in path.glob("checkpoint-*")
                if c.name.split("-", 1)[1].isdigit() and (c / "config.json").is_file()
            )
            if not checkpoints:
                raise FileNotFoundError(f"{path} has neither config.json nor a checkpoint-N/ with one")
            return str(checkpoints[-1][1])
    return resolve_model_path(model, seed=seed, task=task)


def embedded_task(benchmarks: list[str]) -> str:
    """The embedded task whose tiny model evaluates ``benchmarks`` when no --model is given: one model
    reads one task's characters, so two embedded tasks need two runs."""
    named = sorted({b for b in benchmarks if b in TASKS})
    if len(named) > 1:
        raise ValueError(f"--benchmarks names {' and '.join(named)}: each has its own tiny model; evaluate one per "
                         "run, or pass --model")
    return named[0] if named else DEFAULT_TASK


def parse_benchmark(spec: str, *, layout: str, split: str | None, limit: int | None, seed: int) -> tuple[str, list]:
    """``NAME``, ``NAME=FILE``, ``FILE`` or an embedded task -> (name, problems)."""
    from cobarl.data.math import BENCHMARKS, embedded_problems, load_math

    if spec in TASKS:
        return spec, embedded_problems(spec, 64, seed=seed)[:limit]
    name, sep, file = spec.partition("=")
    if sep:
        known = BENCHMARKS.get(name.lower().replace("_", "-"))
        bench_layout = known.layout if known is not None and layout == "auto" else layout
        return name, load_math(file, layout=bench_layout, name=name, limit=limit)
    problems = load_math(spec, layout=layout, split=split, limit=limit)
    return (spec if spec.lower() in BENCHMARKS else Path(spec).stem), problems


def output_path(arg: str | None) -> Path:
    """The results file; ValueError now if it could not be written (checked before any work)."""
    path = Path(arg).expanduser() if arg is not None else Path("runs") / time.strftime("eval-%Y%m%d-%H%M%S") / "results.json"
    if path.is_dir():
        raise ValueError(f"-o {path} is a folder; give a file path such as {path / 'results.json'}")
    writable_dir(path.parent, "the results")
    return path


def run_eval(args: argparse.Namespace, *, log=print) -> dict[str, Any]:
    """Load the model and benchmarks, evaluate, print the table, write the JSON; returns the JSON object.

    Order: what can be checked cheaply (output path, benchmark files, reward names) fails before
    the model loads; the numeric options were checked by the parser.
    """
    out_path = output_path(args.output)
    task = embedded_task(args.benchmarks) if args.model is None else None
    benchmarks = dict(parse_benchmark(s, layout=args.layout, split=args.split, limit=args.limit, seed=args.seed)
                      for s in args.benchmarks)
    device = _device(args.device)
    rewards = _load_rewards(benchmarks, args)
    from cobarl.train.rewards import probe_verifier

    for name, problems in benchmarks.items():  # as cobarl train does: a broken verifier fails before the model loads
        probe_verifier(rewards[name], [p.answer for p in problems], before="evaluating")
    try:
        model_path = resolve_eval_model(args.model, seed=args.seed, task=task)
        generator, tokenizer, backend = _load_generator(model_path, device, args)
        result, records = _evaluate(generator, tokenizer, benchmarks, rewards, args, log=log,
                                    header=f"model {model_path} ({backend}, {device})")
    finally:
        for reward in set(rewards.values()):
            getattr(reward, "close", lambda: None)()  # stop math-verify workers
    _refuse_all_failed(result, rewards)
    result.config.update(model=model_path, backend=backend, device=device, system=args.system,
                         rewards={name: _reward_choice(name, args) for name in benchmarks},
                         benchmarks=list(args.benchmarks))
    data = result.to_json()
    _write_results(out_path, data, records if args.save_completions else None)
    log(result.table())
    failures = sum(r.reward_failures for r in result.benchmarks.values())
    if failures:
        log(f"warning: {failures} completion(s) scored 0 because the reward raised or timed out")
    log(f"results: {out_path}")
    return data


def _refuse_all_failed(result, rewards: dict[str, Any]) -> None:
    """Stop when every reward call of a benchmark failed: its scores would be zeros, not an accuracy."""
    dead = [name for name, r in result.benchmarks.items() if r.reward_failures and r.reward_failures >= r.problems * r.samples]
    if dead:
        last = getattr(rewards[dead[0]], "last_failure", "")
        raise RuntimeError(
            f"every reward call failed on {', '.join(dead)}" + (f" (last failure: {last})" if last else "")
            + ": the scores would be zeros, not an accuracy, so no results were written. Fix the verifier "
            "(or raise --reward-timeout / --verify-timeout) and run again")


def _reward_choice(benchmark: str, args: argparse.Namespace) -> str:
    return args.reward if args.reward != "auto" else ("exact" if benchmark in TASKS else "math")


def _load_rewards(benchmarks: dict[str, list], args: argparse.Namespace) -> dict[str, Any]:
    """One reward per benchmark; benchmarks with the same choice share one (a single math-verify pool)."""
    from cobarl.rewards.math import MathVerifier
    from cobarl.rewards import load_reward

    shared: dict[str, Any] = {}
    for choice in {_reward_choice(name, args) for name in benchmarks}:
        if choice == "math":
            load_reward("math")  # a clear ImportError now if math-verify is missing
            shared[choice] = MathVerifier(timeout=args.verify_timeout, workers=args.verify_workers)
            shared[choice].warm_up()  # start the worker(s) while the model loads
        else:
            shared[choice] = load_reward(choice, timeout=args.reward_timeout)
    return {name: shared[_reward_choice(name, args)] for name in benchmarks}


def _device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA GPU is available")
    return ("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else choice


def _load_generator(model_path: str, device: str, args: argparse.Namespace) -> tuple[Any, Any, str]:
    """``(generator, tokenizer, backend)`` for ``--backend`` on ``device``."""
    import torch

    from cobarl.evaluate.avgk import HFGenerator, VLLMGenerator, vllm_available

    backend = args.backend if args.backend != "auto" else ("vllm" if device == "cuda" and vllm_available() else "hf")
    if backend == "vllm":
        from transformers import AutoTokenizer

        return VLLMGenerator(model_path, seed=args.seed), AutoTokenizer.from_pretrained(model_path), backend
    from transformers.utils import logging as hf_logging

    from cobarl.models.load import load_model

    hf_logging.disable_progress_bar()
    model, tokenizer = load_model(model_path)
    model.to(device)
    if device == "cpu":
        small = sum(p.numel() for p in model.parameters()) < 5_000_000
        threads = args.cpu_threads or (1 if small else None)  # tiny matmuls: one thread is fastest
        if threads:
            torch.set_num_threads(threads)
    return HFGenerator(model, tokenizer, batch_size=args.batch_size), tokenizer, backend


def _evaluate(generator, tokenizer, benchmarks: dict[str, list], rewards: dict[str, Any], args: argparse.Namespace,
              *, log, header: str):
    """Sample and score; returns the `EvalResult` and the completion records (for --save-completions)."""
    from cobarl.data.math import format_prompt
    from cobarl.evaluate.avgk import evaluate_benchmarks

    max_tokens = args.max_tokens or _default_max_tokens(embedded=args.model is None)
    templates = {name: args.template if args.template != "auto" else ("raw" if name in TASKS else "boxed")
                 for name in benchmarks}
    prompt_fns = {name: (lambda p, t=templates[name]: format_prompt(p.prompt, t, tokenizer=tokenizer, system=args.system))
                  for name in benchmarks}
    n_problems = sum(len(v) for v in benchmarks.values())
    log(f"cobarl eval: {header} | {len(benchmarks)} benchmark(s), {n_problems} problems "
        f"x k={args.k} | T={args.temperature:g} top-p={args.top_p:g} max-tokens={max_tokens}")
    records: list[dict] = []

    def keep(name, problems, completions, scores):
        for i, (c, s) in enumerate(zip(completions, scores)):
            p = problems[i // args.k]
            records.append({"benchmark": name, "id": p.id, "sample": i % args.k, "answer": p.answer,
                            "completion": c, "score": s})

    started = time.perf_counter()
    result = evaluate_benchmarks(generator, benchmarks, rewards, k=args.k, temperature=args.temperature,
                                 top_p=args.top_p, max_tokens=max_tokens, prompt_fn=prompt_fns, seed=args.seed,
                                 progress=args.progress, on_completions=keep if args.save_completions else None)
    result.config.update(templates=templates, seconds=time.perf_counter() - started)
    return result, records


def _default_max_tokens(*, embedded: bool) -> int:
    if not embedded:
        return DEFAULT_MAX_TOKENS
    from cobarl.models.tiny import MAX_NEW_TOKENS

    return MAX_NEW_TOKENS


def _write_results(path: Path, data: dict[str, Any], records: list[dict] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data, indent=2)
    if records is not None:
        write_text(path.with_name("completions.jsonl"), "".join(json.dumps(r) + "\n" for r in records))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cobarl eval`` / ``python -m cobarl.evaluate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        run_eval(args)
    except (ValueError, FileNotFoundError, ConnectionError, ImportError, RuntimeError) as e:
        print(f"cobarl eval: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cobarl eval: interrupted", file=sys.stderr)
        return 130
    return 0
