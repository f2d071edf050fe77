"""What a comparison runs (`CompareOptions`) and what one run gives back (`RunResult`)."""

from __future__ import annotations

import re
import zlib

from dataclasses import dataclass, field
from typing import Any

from cobarl.experiments.comparison.grid import Grid
from cobarl.experiments.simulation.sim_model import SimConfig
from cobarl.experiments.simulation.simulator import SimOptions
from cobarl.experiments.comparison.specs import StrategySpec

BACKEND_NAMES = ("simulated", "real")
BUDGETS = ("generated", "steps")
"""The back-ends (`cobarl.experiments.comparison.backends.BACKENDS`)."""


@dataclass(frozen=True)
class CompareOptions:
    """Everything one comparison needs (the CLI fills it).

    Attributes:
        strategies: the arms.
        seeds: run every arm once per seed (same seeds for every arm).
        steps: training steps per run.
        prompts_per_step: M, prompts per step.
        rollouts_per_prompt: G, average rollouts per prompt; the budget per step is
            ``M * G * budget_multiplier * spec.budget_multiplier``.
        budget_multiplier: scales every arm's budget (``0.5`` = a half-budget comparison).
        backend: ``"simulated"`` or ``"real"``.
        sim: simulator settings (simulated backend only).
        workers: processes running seeds in parallel (1 = in this process).
        target_accuracy: held-out accuracy for "rollouts to target" (None: on each seed, the
            baseline's final accuracy on that seed).
        baseline: label of the arm the gaps are measured against (default: ``uniform`` if run).
        real_options: extra keys passed to ``run_training`` (real backend only).
        budget: ``"generated"`` (default): every run ends once it generated the rollouts that ``steps``
            steps of its budget generate without rounds (so policies that generate more than they
            train on take fewer steps; real runs decay the learning rate in generated rollouts);
            ``"steps"``: every run trains ``steps`` steps, whatever it generates.
        grid: the sweep's structure when this comparison is a tuning sweep (`expand_grid`).
        sim_accuracy: simulated back-end: show its accuracy in the report and console even while it is
            not a prediction (`cobarl.experiments.simulation.sim_trust`), under a warning; it changes no run.
        run_root: real back-end: the folder that holds every run's ``cobarl train`` folder
            (``<output-dir>/train`` from the CLI), so a comparison writes nothing outside its own folder;
            None: ``cobarl train``'s default place (``runs/``). It changes no run's result.
    """

    strategies: tuple[StrategySpec, ...]
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 200
    prompts_per_step: int = 64
    rollouts_per_prompt: float = 16.0
    budget_multiplier: float = 1.0
    backend: str = "simulated"
    sim: SimConfig = field(default_factory=SimConfig)
    workers: int = 1
    target_accuracy: float | None = None
    baseline: str | None = None
    real_options: dict[str, Any] = field(default_factory=dict)
    grid: Grid | None = None
    budget: str = "generated"
    sim_accuracy: bool = False
    run_root: str | None = None

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"unknown budget {self.budget!r}; valid: {', '.join(BUDGETS)}")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKEND_NAMES)}")
        if self.steps < 1 or self.prompts_per_step < 1 or not self.seeds:
            raise ValueError("need steps >= 1, prompts_per_step >= 1 and at least one seed")
        if self.rollouts_per_prompt <= 0 or self.budget_multiplier <= 0:
            raise ValueError("rollouts_per_prompt and budget_multiplier must be > 0")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {list(self.seeds)}")
        for spec in self.strategies:  # a policy that trains n per prompt needs a whole n
            spec.check_budget(self.per_prompt(spec))
        for spec in self.strategies:  # an allocator keeps every prompt's budget in [min_budget, max_budget]
            try:
                o = spec.strategy_config(self.steps).options
            except (ValueError, TypeError) as err:
                raise ValueError(f"--strategies {spec.label!r}: {err}") from None
            lo, hi = getattr(o, "min_budget", 1), getattr(o, "max_budget", float("inf"))
            per_prompt = self.per_prompt(spec)
            if not lo <= per_prompt <= hi:
                raise ValueError(
                    f"{spec.label}: {per_prompt:g} rollouts per prompt on average is outside "
                    f"[min_budget, max_budget] = [{lo}, {hi}]; change --rollouts-per-prompt or --budget-multiplier"
                )
        if self.baseline is not None and self.baseline not in [s.label for s in self.strategies]:
            raise ValueError(f"baseline {self.baseline!r} is not one of the strategies run")

    def per_prompt(self, spec: StrategySpec) -> float:
        """Rollouts per prompt of one arm's step budget (what trains, for the policies that generate more)."""
        return self.rollouts_per_prompt * self.budget_multiplier * spec.budget_multiplier

    @property
    def baseline_label(self) -> str:
        labels = [s.label for s in self.strategies]
        return self.baseline or ("uniform" if "uniform" in labels else labels[0])

    def max_generated(self, spec: StrategySpec) -> int | None:
        """One run's budget of generated rollouts (None: ``budget="steps"``)."""
        if self.budget == "steps":
            return None
        return self.steps * round(self.prompts_per_step * self.per_prompt(spec))

    def sim_options(self) -> SimOptions:
        return SimOptions(
            steps=self.steps,
            prompts_per_step=self.prompts_per_step,
            rollouts_per_prompt=self.rollouts_per_prompt,
            budget_multiplier=self.budget_multiplier,
            sim=self.sim,
        )


@dataclass(frozen=True)
class RunResult:
    """One (strategy, seed) run: ``rows`` of per-step metrics and the final ``summary``."""

    label: str
    seed: int
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


def run_name(label: str, seed: int) -> str:
    """``<label>-seed<seed>``, the name of one run's stored result and of its real run folder; a label
    with characters unsafe in a file name gets them replaced and a checksum of the label added, so two
    labels never share a name."""
    name = re.sub(r"[^A-Za-z0-9._=@+-]+", "_", label)
    if name != label:
        name += f"-{zlib.crc32(label.encode()):08x}"
    return f"{name}-seed{seed}"
