"""Experiments: ``cobarl compare`` runs strategies side by side and writes one report.

Backends are functions ``(spec, seed, options) -> RunResult``; the ``simulated`` backend is an
LLM-free model of GRPO learning dynamics (:mod:`cobarl.experiments.simulation.simulator`), the ``real`` one
calls the ``cobarl train`` trainer. By concern:

* `cobarl.experiments.comparison`: what runs (specs, grid, back-ends, workers, run store; ``cobarl
  compare`` and ``cobarl probe``);
* `cobarl.experiments.simulation`: the simulator, its presets, and its check against real training;
* `cobarl.experiments.report`: a comparison's numbers, ``summary.json``, figures and ``report.md``; the
  regime map built from several reports.

This package's own names (below) are the public ones; ``python -m cobarl.experiments`` is ``cobarl compare``.
"""

from cobarl.experiments.comparison.backends import BACKENDS, BackendUnavailable
from cobarl.experiments.comparison.compare import run_compare
from cobarl.experiments.comparison.grid import Grid, expand_grid, parse_grid
from cobarl.experiments.comparison.runs import CompareOptions, RunResult
from cobarl.experiments.comparison.specs import (
    DEFAULT_STRATEGIES,
    PRESETS,
    StrategySpec,
    parse_strategies,
    parse_strategy,
)
from cobarl.experiments.simulation.sim_model import SimConfig
from cobarl.experiments.simulation.simulator import SimOptions, simulate

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
