"""Experiments: ``cobarl compare`` runs strategies side by side and writes one report.

Backends are functions ``(spec, seed, options) -> RunResult``; the ``simulated`` backend is an
LLM-free model of GRPO learning dynamics (:mod:`cobarl.experiments.simulator`), the ``real`` one
calls the ``cobarl train`` trainer.
"""

from cobarl.experiments.backends import BACKENDS, BackendUnavailable
from cobarl.experiments.compare import run_compare
from cobarl.experiments.grid import Grid, expand_grid, parse_grid
from cobarl.experiments.runs import CompareOptions, RunResult
from cobarl.experiments.specs import (
    DEFAULT_STRATEGIES,
    PRESETS,
    StrategySpec,
    parse_strategies,
    parse_strategy,
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
