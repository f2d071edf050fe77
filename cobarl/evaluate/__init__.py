"""Evaluation: avg@k and pass@k on math benchmarks (``cobarl eval``)."""

from cobarl.evaluate.avgk import (
    BenchmarkResult,
    EvalResult,
    HFGenerator,
    VLLMGenerator,
    default_ks,
    evaluate_benchmarks,
    pass_at_k,
    summarize,
)

__all__ = [
    "BenchmarkResult",
    "EvalResult",
    "HFGenerator",
    "VLLMGenerator",
    "default_ks",
    "evaluate_benchmarks",
    "pass_at_k",
    "summarize",
]
