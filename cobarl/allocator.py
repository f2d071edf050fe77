"""A stateful allocator: statistics + capability + value + solver behind one name.

Trainers (TRL, verl, the simulator) hold one :class:`Allocator` and call, every step::

    plan = allocator.plan(prompt_ids, total_budget)   # counts with the alpha, beta of the last step
    ...roll out plan.counts[i] completions of prompt i and score them...
    allocator.observe(group_ids, rewards)              # stats and capability for the next step

This is the paper's order (A.6): allocate with the previous step's (alpha, beta), roll out, then
update the per-prompt stats and the failure-rate window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cobarl.allocate import Allocation, allocate, budget_metrics
from cobarl.capability import CapabilityTracker
from cobarl.stats import PromptStats, group_outcomes
from cobarl.value import CobaValue, KnapsackValue

# strategy -> (tracker schedule, allocation method, value family)
STRATEGIES: dict[str, tuple[str, str, str]] = {
    "uniform": ("exploit-to-explore", "uniform", "coba"),
    "coba": ("exploit-to-explore", "threshold", "coba"),
    "coba-heap": ("exploit-to-explore", "heap", "coba"),
    "coba-reference": ("exploit-to-explore", "coba-reference", "coba"),
    "knapsack-rl": ("exploit-to-explore", "knapsack-rl", "knapsack"),
    "knapsack": ("exploit-to-explore", "threshold", "knapsack"),
    "fixed-beta": ("fixed", "threshold", "coba"),
    "linear-decay": ("linear-decay", "threshold", "coba"),
    "explore-to-exploit": ("explore-to-exploit", "threshold", "coba"),
}


@dataclass
class AllocatorConfig:
    """How budgets are chosen each step.

    Attributes:
        strategy: one of ``STRATEGIES`` (``uniform`` = plain GRPO; ``coba`` = CoBA-RL Algorithm 1
            solved exactly; ``coba-heap`` = the same with the literal heap; ``coba-reference`` =
            the public CoBA-RL code path; ``knapsack-rl`` = the public Knapsack-RL policy;
            ``knapsack`` = the Knapsack value solved exactly without its fallbacks;
            ``fixed-beta``, ``linear-decay``, ``explore-to-exploit`` = the paper's Table 2/3
            variants) or a callable ``f(pass_rates, total_budget, min_budget, max_budget) -> counts``.
        min_budget: fewest rollouts per prompt (paper: 2).
        max_budget: most rollouts per prompt (paper: 128).
        kappa: alpha + beta of the preference density (paper: 11).
        window: k, steps in the failure-rate moving average (public 7B script: 1).
        gamma: sharpness of Psi below F = 0.5 (paper: 10).
        tau: saturation temperature, a number or ``"adaptive"`` (public code: variance-driven in [3, 12]).
        stats_window: appearances per prompt in its pass-rate estimate (public code: 1).
        estimator: ``"empirical"`` (papers) or ``"posterior"`` (Beta-Binomial mean).
        prior: pass rate of unseen prompts: ``"global"`` mean or ``"half"`` (public CoBA code: 0.5).
        fixed_alpha: alpha for ``fixed-beta`` (paper's Table 3: 10.5 or 1.5).
        fixed_beta: beta for ``fixed-beta`` (paper's Table 3: 1.5 or 10.5).
        total_steps: planned training steps, needed by ``linear-decay``.
    """

    strategy: str | Callable = "coba"
    min_budget: int = 2
    max_budget: int = 128
    kappa: float = 11.0
    window: int = 1
    gamma: float = 10.0
    tau: float | str = 8.0
    stats_window: int = 1
    estimator: str = "empirical"
    prior: str = "global"
    fixed_alpha: float = 10.5
    fixed_beta: float = 1.5
    total_steps: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.strategy, str) and self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)} (or a callable)")
        if not callable(self.strategy) and not isinstance(self.strategy, str):
            raise TypeError(f"strategy must be a name or a callable, got {self.strategy!r}")
        if not (isinstance(self.min_budget, int) and isinstance(self.max_budget, int) and 1 <= self.min_budget <= self.max_budget):
            raise ValueError(f"need integers 1 <= min_budget <= max_budget, got {self.min_budget}, {self.max_budget}")


class Allocator:
    """Per-prompt stats, capability tracker and solver for one strategy; see the module docstring."""

    def __init__(self, config: AllocatorConfig | None = None, **overrides: Any) -> None:
        self.config = config or AllocatorConfig(**overrides)
        if config is not None and overrides:
            raise TypeError("pass either a config or keyword overrides, not both")
        c = self.config
        schedule = STRATEGIES[c.strategy][0] if isinstance(c.strategy, str) else "exploit-to-explore"
        self.stats = PromptStats(window=c.stats_window, estimator=c.estimator, prior=c.prior)
        self.tracker = CapabilityTracker(
            kappa=c.kappa,
            window=c.window,
            gamma=c.gamma,
            schedule=schedule,
            fixed_alpha=c.fixed_alpha,
            fixed_beta=c.fixed_beta,
            total_steps=c.total_steps,
        )
        self.last: Allocation | None = None

    def value(self) -> object:
        """The value function the next plan will maximise."""
        family = STRATEGIES[self.config.strategy][2] if isinstance(self.config.strategy, str) else "coba"
        if family == "knapsack":
            return KnapsackValue()
        alpha, beta = self.tracker.params()
        return CobaValue(alpha=alpha, beta=beta, tau=self.config.tau)

    def plan(self, prompt_ids: Sequence[Any], total_budget: int) -> Allocation:
        """Counts for ``prompt_ids`` (aligned with them) that sum to ``total_budget``."""
        c = self.config
        method = c.strategy if callable(c.strategy) else STRATEGIES[c.strategy][1]
        pass_rates, known = self.stats.pass_rates(prompt_ids), self.stats.seen(prompt_ids)
        self.last = allocate(
            pass_rates,
            int(total_budget),
            min_budget=c.min_budget,
            max_budget=c.max_budget,
            value=self.value(),
            method=method,
            known=known,
        )
        # The estimates the plan was made from, for reports (budget vs estimated pass rate).
        self.last.diagnostics.update(pass_rates=pass_rates, known=known)
        return self.last

    def observe(self, group_ids: Sequence[Any], rewards: np.ndarray) -> dict[str, float]:
        """Update stats and capability from one step's rollouts (``group_ids[j]`` = prompt of rollout j)."""
        ids, successes, attempts = group_outcomes(group_ids, rewards)
        self.stats.update(ids, successes, attempts)
        self.tracker.update(successes / attempts)
        return self.metrics()

    def metrics(self) -> dict[str, float]:
        out = self.tracker.metrics()
        out["capability/global_pass_rate"] = self.stats.global_pass_rate
        if self.last is not None:
            out.update(budget_metrics(self.last.counts))
            out["budget/objective"] = self.last.objective
            out["perf/allocate_s"] = self.last.diagnostics["seconds"]
        return out

    def state_dict(self) -> dict:
        cfg = asdict(self.config)
        if callable(self.config.strategy):
            cfg["strategy"] = getattr(self.config.strategy, "__name__", "callable")
        return {"config": cfg, "stats": self.stats.state_dict(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stats.load_state_dict(state["stats"])
        self.tracker.load_state_dict(state["tracker"])
