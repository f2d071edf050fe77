"""Experiments: ``cobarl compare`` runs strategies side by side and writes one report.

Backends are functions ``(spec, seed, options) -> RunResult``; the ``simulated`` backend is an
LLM-free model of GRPO learning dynamics (:mod:`cobarl.experiments.simulator`), the ``real`` one
calls the ``cobarl train`` trainer.
"""

from cobarl.experiments.compare import (
    BACKENDS,
    DEFAULT_STRATEGIES,
    PRESETS,
    BackendUnavailable,
    CompareOptions,
    Grid,
    RunResult,
    StrategySpec,
    expand_grid,
    parse_grid,
    parse_strategies,
    parse_strategy,
    run_compare,
)
from cobarl.experiments.simulator import SimConfig, SimOptions, simulate

__all__ = [
    "BACKENDS",
    "DEFAULT_STRATEGIES",
    "PRESETS",
    "BackendUnavailable",
    "CompareOptions",
    "Grid",
    "RunResult",
    "SimConfig",
    "SimOptions",
    "StrategySpec",
    "expand_grid",
    "parse_grid",
    "parse_strategies",
    "parse_strategy",
    "run_compare",
    "simulate",
]
