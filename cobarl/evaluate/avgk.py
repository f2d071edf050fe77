"""avg@k and pass@k: the estimators, and the sample-and-score loop behind ``cobarl eval``.

For each problem, ``k`` completions are sampled and scored in {0, 1}:

- ``avg@k``: the mean score over all problems and samples (the papers' headline metric, k = 16);
- ``pass@j`` (j <= k): the unbiased estimator of Chen et al. (2021, https://arxiv.org/abs/2107.03374)
  from ``c`` correct of ``n`` samples, ``1 - C(n - c, j) / C(n, j)``, averaged over problems.

A sample counts as correct for pass@j when its score is >= 0.5 (rewards are 0/1; this only matters
for a user reward with partial credit, whose mean still enters avg@k unchanged).

The loop (`evaluate_benchmarks`) takes a `Generator` (HF ``generate`` on CPU/GPU, or vLLM) and a
reward ``f(completion, answer)``, so the training loop can call it on the live policy::

    result = evaluate_benchmarks(HFGenerator(model, tokenizer), {"aime24": problems}, math_reward, k=16)
    result.metrics()   # {"eval/aime24/avg@16": ..., "eval/aime24/pass@16": ..., "eval/average/avg@16": ...}
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cobarl import metrics as M
from cobarl.models.generate import HFGenerator  # noqa: F401 -- part of this module's API (Generator implementations)

# --- estimators (pure) -----------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``c`` correct of ``n`` samples: ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k / i)`` (Chen et al. 2021), stable for large ``n``.

    >>> pass_at_k(4, 1, 1)  # 1 correct of 4: a single draw succeeds 1/4 of the time
    0.25
    >>> pass_at_k(4, 1, 2)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    0.5
    >>> pass_at_k(4, 0, 4), pass_at_k(4, 1, 4)
    (0.0, 1.0)
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def default_ks(k: int) -> list[int]:
    """Powers of two up to ``k``, plus ``k``: ``default_ks(16) == [1, 2, 4, 8, 16]``.

    >>> default_ks(16), default_ks(6)
    ([1, 2, 4, 8, 16], [1, 2, 4, 6])
    """
    ks = [2**i for i in range(int(math.log2(k)) + 1)] if k >= 1 else []
    return ks + ([k] if k not in ks else [])


def summarize(scores: Sequence[Sequence[float]], ks: Sequence[int] | None = None) -> dict[str, float]:
    """``{"avg@n": ..., "pass@j": ...}`` from per-problem scores, ``[P][n]`` (same ``n`` for every problem).

    Args:
        scores: ``scores[p][s]``: score of sample ``s`` of problem ``p``.
        ks: the ``j`` of each pass@j; default `default_ks(n)`.

    >>> summarize([[1, 0, 0, 0], [1, 1, 1, 1]], ks=[1, 4])  # avg = (1/4 + 1) / 2
    {'avg@4': 0.625, 'pass@1': 0.625, 'pass@4': 1.0}
    """
    arr = np.asarray(scores, dtype=float)  # [P, n]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty [problems, samples] table, got shape {arr.shape}")
    n = arr.shape[1]
    correct = (arr >= 0.5).sum(axis=1)  # [P]
    out = {f"avg@{n}": float(arr.mean())}
    for k in ks if ks is not None else default_ks(n):
        out[f"pass@{k}"] = float(np.mean([pass_at_k(n, int(c), k) for c in correct]))
    return out


# --- generation backends ---------------------------------------------------------------------------


class Generator(Protocol):
    """Samples ``n`` completions per prompt (prompts are final text, chat template already applied)."""

    def generate(self, prompts: Sequence[str], *, n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int, on_done: Callable[[int], None] | None = None) -> list[list[str]]: ...


class VLLMGenerator:
    """vLLM (GPU): ``LLM(model_path).generate`` with ``SamplingParams(n=...)``; import guarded."""

    def __init__(self, model_path: str, **llm_kwargs: Any) -> None:
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("backend 'vllm' needs vLLM: pip install vllm (GPU only)") from e
        self.llm = LLM(model=model_path, **llm_kwargs)

    def max_new_tokens(self, prompts: Sequence[str], requested: int) -> int:
        return requested

    def generate(self, prompts: Sequence[str], *, n: int, temperature: float, top_p: float, max_tokens: int,
                 seed: int, on_done: Callable[[int], None] | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                max_tokens=max_tokens, seed=seed)
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        if on_done is not None:
            on_done(len(prompts) * n)
        return [[o.text for o in r.outputs] for r in outputs]


def vllm_available() -> bool:
    """vLLM importable and a CUDA GPU present."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# --- the loop --------------------------------------------------------------------------------------


@dataclass
class BenchmarkResult:
    name: str
    problems: int
    samples: int  # k: completions per problem
    metrics: dict[str, float]  # avg@k, pass@1 .. pass@k
    seconds: float
    reward_failures: int = 0  # completions whose reward raised or timed out (scored 0)
    per_problem: list[dict] = field(default_factory=list)  # {"id", "correct", "mean"}


@dataclass
class EvalResult:
    benchmarks: dict[str, BenchmarkResult]
    average: dict[str, float]  # unweighted mean over benchmarks of each metric they all report
    config: dict[str, Any] = field(default_factory=dict)

    def metrics(self, prefix: str = M.EVAL_PREFIX) -> dict[str, float]:
        """Flat metrics for a logger: ``{prefix}{benchmark}/{metric}`` and ``{prefix}average/{metric}``."""
        flat = {f"{prefix}{name}/{key}": v for name, r in self.benchmarks.items() for key, v in r.metrics.items()}
        flat.update({f"{prefix}average/{key}": v for key, v in self.average.items()})
        return flat

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "benchmarks": {name: {"problems": r.problems, "samples": r.samples, **r.metrics, "seconds": r.seconds,
                                  "reward_failures": r.reward_failures, "per_problem": r.per_problem}
                           for name, r in self.benchmarks.items()},
            "average": self.average,
        }

    def table(self) -> str:
        """Plain-text table: one row per benchmark, then the average (metrics in percent)."""
        keys = list(next(iter(self.benchmarks.values())).metrics) if self.benchmarks else []
        keys = [k for k in keys if all(k in r.metrics for r in self.benchmarks.values())]
        width = max([len("benchmark"), len("average")] + [len(n) for n in self.benchmarks])
        lines = [f"{'benchmark':<{width}}  {'problems':>8}  " + "  ".join(f"{k:>8}" for k in keys) + f"  {'time':>7}"]
        for name, r in self.benchmarks.items():
            lines.append(f"{name:<{width}}  {r.problems:>8}  " + "  ".join(f"{100 * r.metrics[k]:>8.1f}" for k in keys)
                         + f"  {r.seconds:>6.1f}s")
        if len(self.benchmarks) > 1:
            total = sum(r.problems for r in self.benchmarks.values())
            lines.append(f"{'average':<{width}}  {total:>8}  " + "  ".join(f"{100 * self.average[k]:>8.1f}" for k in keys))
        return "\n".join(lines)


def _score_all(reward: Callable[[str, str], float], completions: list[str], answers: list[str]) -> list[float]:
    batch = getattr(reward, "score", None)  # MathVerifier.score checks in parallel across its workers
    if callable(batch):
        return [float(s) for s in batch(completions, answers)]
    return [float(reward(c, a)) for c, a in zip(completions, answers)]


def _evaluate_one(generator, name: str, problems: Sequence[Any], fmt: Callable[[Any], str],
                  score_fn: Callable[[str, str], float], bar, *, k: int, temperature: float, top_p: float,
                  max_tokens: int, seed: int, ks: Sequence[int] | None) -> tuple[BenchmarkResult, list[str], list[float]]:
    """One benchmark: sample ``k`` completions per problem, score them; (result, flat completions, scores)."""
    started = time.perf_counter()
    prompts = [fmt(p) for p in problems]
    cap = getattr(generator, "max_new_tokens", None)
    budget = cap(prompts, max_tokens) if callable(cap) else max_tokens
    samples = generator.generate(prompts, n=k, temperature=temperature, top_p=top_p, max_tokens=budget,
                                 seed=seed, on_done=bar.update if bar is not None else None)
    flat = [c for group in samples for c in group]
    answers = [str(p.answer) for p in problems for _ in range(k)]
    warnings = getattr(score_fn, "warnings", None)
    failures_before = warnings.total if warnings is not None else 0
    scores = _score_all(score_fn, flat, answers)
    table = np.asarray(scores, dtype=float).reshape(len(problems), k)  # [P, k]
    per_problem = [{"id": str(getattr(p, "id", i)), "correct": int((row >= 0.5).sum()), "mean": float(row.mean())}
                   for i, (p, row) in enumerate(zip(problems, table))]
    result = BenchmarkResult(
        name=name, problems=len(problems), samples=k, metrics=summarize(table, ks),
        seconds=time.perf_counter() - started,
        reward_failures=(warnings.total - failures_before) if warnings is not None else 0,
        per_problem=per_problem,
    )
    return result, flat, scores


def evaluate_benchmarks(
    generator: Generator,
    benchmarks: Mapping[str, Sequence[Any]],
    reward: Callable[[str, str], float] | Mapping[str, Callable[[str, str], float]],
    *,
    k: int = 16,
    temperature: float = 1.0,
    top_p: float = 0.9,
    max_tokens: int = 4096,
    prompt_fn: Callable[[Any], str] | Mapping[str, Callable[[Any], str]] = lambda p: p.prompt,
    seed: int = 0,
    progress: bool = True,
    ks: Sequence[int] | None = None,
    on_completions: Callable[[str, Any, list[str], list[float]], None] | None = None,
) -> EvalResult:
    """Sample ``k`` completions per problem of each benchmark, score them, and compute avg@k / pass@j.

    Args:
        generator: `HFGenerator`, `VLLMGenerator` or anything with their ``generate``.
        benchmarks: name -> problems (objects with ``prompt``, ``answer`` and ``id``, e.g. `MathProblem`).
        reward: ``f(completion, answer) -> float`` in {0, 1}, or one per benchmark name. Wrap user rewards
            in `cobarl.rewards.GuardedReward` so one failure scores 0 instead of stopping the run.
        k: samples per problem. temperature, top_p, max_tokens: sampling (``temperature=0``: greedy).
        prompt_fn: problem -> generation-ready text (e.g. `cobarl.data.format_prompt` with a template),
            or one per benchmark name.
        seed: sampling seed. progress: a tqdm bar on stderr. ks: the j of pass@j (default `default_ks(k)`).
        on_completions: called per benchmark with ``(name, problems, flat completions, flat scores)``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    total = sum(len(p) for p in benchmarks.values()) * k
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="cobarl eval", unit="sample", dynamic_ncols=True, file=sys.stderr)
    results: dict[str, BenchmarkResult] = {}
    sampling = dict(k=k, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, ks=ks)
    try:
        for name, problems in benchmarks.items():
            if not problems:
                raise ValueError(f"benchmark {name!r} has no problems")
            if bar is not None:
                bar.set_description(f"cobarl eval {name}")
            fmt = prompt_fn[name] if isinstance(prompt_fn, Mapping) else prompt_fn
            score_fn = reward[name] if isinstance(reward, Mapping) else reward
            results[name], flat, scores = _evaluate_one(generator, name, problems, fmt, score_fn, bar, **sampling)
            if on_completions is not None:
                on_completions(name, problems, flat, scores)
    finally:
        if bar is not None:
            bar.close()
    keys = [key for key in next(iter(results.values())).metrics if all(key in r.metrics for r in results.values())]
    average = {key: float(np.mean([r.metrics[key] for r in results.values()])) for key in keys}
    config = {"k": k, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed}
    return EvalResult(benchmarks=results, average=average, config=config)
