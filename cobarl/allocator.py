"""A stateful allocator: statistics + capability + value + solver behind one name.

Trainers (TRL, verl, the simulator) hold one :class:`Allocator` and call, every step::

    plan = allocator.plan(prompt_ids, total_budget)   # counts with the alpha, beta of the last step
    ...roll out plan.counts[i] completions of prompt i and score them...
    allocator.observe(group_ids, rewards)              # stats and capability for the next step

This is the paper's order (A.6): allocate with the previous step's (alpha, beta), roll out, then
update the per-prompt stats and the failure-rate window.

The allocator's options are :class:`AllocatorOptions`; its strategies (CoBA-RL, Knapsack-RL, GVM,
uniform, the paper's ablations) are registered below, each a preset of those options, set the way
its paper's public code runs it: its own pass-rate estimator, its own success rule, its own tau.
A user's value for any option wins over the preset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.allocation import METHODS, Allocation, allocate, budget_metrics
from cobarl.capability import SCHEDULES, CapabilityTracker
from cobarl.io import check_state_format
from cobarl.options import OptionSet, option
from cobarl.stats import PromptStats, RecentRolloutStats, SuccessRule, as_id_list, success_rule
from cobarl.strategies import STRATEGIES, canonical_options, option_changes, register_strategy
from cobarl.value import VALUES

STATS_KINDS = ("appearances", "recent-rollouts")
STATE_FORMAT = "cobarl.allocator"
STATE_VERSION = 2
_ADAPTIVE = ("adaptive",)
# Solvers that plan with one value whatever they are given (uniform ignores every value: equal budgets).
_METHOD_VALUE = {"knapsack-rl": "knapsack", "gvm": "gvm", "coba-reference": "coba"}
_APPEARANCES = ("stats", ("appearances",))
_RECENT = ("stats", ("recent-rollouts",))


@dataclass(frozen=True)
class AllocatorOptions(OptionSet):
    """The options of the plan-before-generation policy; every field documents itself (its ``help``)
    and is a ``cobarl train`` flag, a YAML key, a ``cobarl compare`` option and a verl setting at once
    (:mod:`cobarl.options`). The defaults are CoBA-RL's; a strategy presets some of them."""

    min_budget: int = option(2, "Fewest rollouts per prompt (paper: 2).", ge=1)
    max_budget: int = option(128, "Most rollouts per prompt (paper: 128).", ge=1)
    schedule: str = option("exploit-to-explore", "How the capability's alpha, beta follow the failure rate "
                           "(cobarl.capability.SCHEDULES; the strategies fixed-beta, linear-decay, explore-to-exploit "
                           "preset the others).", choices=SCHEDULES)
    method: str | Callable = option(
        "threshold", "Solver that turns values into budgets (cobarl.METHODS; coba-reference, knapsack-rl and gvm "
        "preset their public code's), or (Python) a callable f(pass_rates, total_budget, min_budget, max_budget) -> counts.")
    value: str = option("coba", "Value family of a budget: 'coba' (Beta density), 'knapsack' or 'gvm'.")
    kappa: float = option(11.0, "alpha + beta of the preference density (paper: 11).", gt=2,
                          why="alpha, beta >= 1 must sum to it")
    window: int = option(1, "k, steps in the failure-rate moving average (public 7B script: 1).", ge=1, aliases=("--k",))
    gamma: float = option(10.0, "Sharpness of Psi below F = 0.5 (paper: 10).", gt=0)
    tau: float | str | None = option(
        None, "Saturation temperature of the CoBA value (value=coba), a number or 'adaptive' (public code: "
        "variance-driven in [3, 12]; coba-reference presets it).", gt=0, words=_ADAPTIVE,
        when=("value", ("coba",)), fallback=8.0)
    success: str | Callable = option(
        "==1", "When a reward counts as a success for the statistics: '>0.5', '==1', '>=1' or (Python) a callable "
        "f(rewards) -> bool array. Both papers' code: '==1' (DAPO's +-1 rewards give the same as '>0.5', a reward "
        "with an overlong penalty does not).")
    stats: str = option("appearances", "Pass-rate estimator, 'appearances' (CoBA-RL) or 'recent-rollouts' "
                        "(Knapsack-RL; its strategies preset it).", choices=STATS_KINDS)
    stats_window: int | None = option(None, "Appearances per prompt in its estimate (stats=appearances; public code: 1).",
                                      ge=1, when=_APPEARANCES, fallback=1)
    estimator: str | None = option(
        None, "'empirical' (papers) or 'posterior' (Beta-Binomial mean; stats=appearances).",
        choices=("empirical", "posterior"), when=_APPEARANCES, fallback="empirical")
    prior: str | None = option(
        None, "Pass rate of unseen prompts, 'half' (public CoBA code) or 'global' mean (stats=appearances).",
        choices=("half", "global"), when=_APPEARANCES, fallback="half")
    recent_rollouts: int | None = option(
        None, "Rollouts averaged per prompt (stats=recent-rollouts; public code: 16).", ge=1, when=_RECENT, fallback=16)
    min_rollouts: int | None = option(
        None, "Rollouts before a prompt counts as seen (stats=recent-rollouts; public code: 8).", ge=1, when=_RECENT,
        fallback=8)
    fixed_alpha: float | None = option(None, "alpha for schedule=fixed (paper's Table 3: 10.5 or 1.5).",
                                       gt=0, when=("schedule", ("fixed",)), fallback=10.5)
    fixed_beta: float | None = option(None, "beta for schedule=fixed (paper's Table 3: 1.5 or 10.5).",
                                      gt=0, when=("schedule", ("fixed",)), fallback=1.5)
    # GVM (RLHFlow/GVM calc_sample_ratio defaults).
    weight_alpha: float | None = option(
        None, "alpha of GVM's weight 1/sqrt(p + alpha/p^(beta-1)) (value=gvm; public: 0.001), not the capability's.",
        ge=0, when=("value", ("gvm",)), fallback=1e-3)
    weight_beta: float | None = option(None, "beta of GVM's weight (value=gvm; public: 2).", when=("value", ("gvm",)),
                                       fallback=2.0)
    total_steps: int | None = option(
        None, "Planned training steps, needed by linear-decay (cobarl train and cobarl compare derive it from the run).",
        ge=1, derived=True)

    def problems(self):
        if self.min_budget > self.max_budget:
            yield f"min_budget ({self.min_budget}) is larger than max_budget ({self.max_budget})"
        if isinstance(self.method, str) and self.method not in METHODS:
            yield f"unknown method {self.method!r}; valid: {', '.join(METHODS)} (or a callable)"
        if self.value not in VALUES:
            yield f"unknown value {self.value!r}; valid: {', '.join(VALUES.names())}"
        elif isinstance(self.method, str) and _METHOD_VALUE.get(self.method, self.value) != self.value:
            yield (f"method {self.method!r} plans with the {_METHOD_VALUE[self.method]!r} value (its public code's); "
                   f"value={self.value!r} would do nothing: set value={_METHOD_VALUE[self.method]!r} or pick another method")
        try:
            success_rule(self.success)  # parse now: a bad rule fails before any work
        except (ValueError, TypeError) as e:
            yield str(e)


def _allocator(name: str, summary: str, **preset: Any) -> None:
    register_strategy(name, "allocator", summary, **preset)


_allocator("uniform", "plain GRPO: the same budget for every prompt", method="uniform")
_allocator("coba", "CoBA-RL Algorithm 1, solved exactly (threshold solver)")
_allocator("coba-heap", "CoBA-RL Algorithm 1 with the literal heap (same counts, slower)", method="heap")
_allocator("coba-reference", "CoBA-RL public BetaAllocator (categories, heap share, fallback)",
           method="coba-reference", tau="adaptive")
_allocator("knapsack-rl", "Knapsack-RL public policy (cost caps, fallback to p=0 prompts, exact DP)",
           method="knapsack-rl", value="knapsack", stats="recent-rollouts")
_allocator("knapsack", "Knapsack-RL value solved exactly, without the public code's fallbacks", value="knapsack",
           stats="recent-rollouts")
_allocator("fixed-beta", "CoBA value with a fixed Beta (paper Table 3)", schedule="fixed")
_allocator("linear-decay", "CoBA value, alpha stepped down linearly (paper Table 3)", schedule="linear-decay")
_allocator("explore-to-exploit", "CoBA value, alpha follows the success rate (Table 2)", schedule="explore-to-exploit")
_allocator("gvm", "GVM budgets n ~ 1/sqrt(p + alpha/p^(beta-1)) (p-only mode) on top of min_budget each",
           method="gvm", value="gvm")


def allocator_options(strategy: str | Callable = "coba", **overrides: Any) -> AllocatorOptions:
    """The options of an allocator strategy (a name, or a callable planning with CoBA's statistics),
    with ``overrides`` on top of its preset."""
    overrides = {k: v for k, v in canonical_options(overrides).items() if v is not None}  # as StrategyConfig reads them
    if callable(strategy):
        return AllocatorOptions(**{"method": strategy, **overrides})
    if strategy not in STRATEGIES or STRATEGIES[strategy].policy != "allocator":
        allocators = [name for name, s in STRATEGIES.items() if s.policy == "allocator"]
        raise ValueError(f"{strategy!r} is not a budget allocator strategy; allocators: {', '.join(allocators)} (or a "
                         "callable); the other strategies are rollout policies: cobarl.policies.make_policy")
    return AllocatorOptions(**{**STRATEGIES[strategy].preset, **overrides})


class Allocator:
    """Per-prompt stats, capability tracker and solver for one strategy; see the module docstring."""

    def __init__(self, config: AllocatorOptions | Any = None, **overrides: Any) -> None:
        """``Allocator(strategy="coba", kappa=7)``, ``Allocator(AllocatorOptions(...))`` or
        ``Allocator(strategy_config)`` (a :class:`cobarl.policies.StrategyConfig` of an allocator strategy)."""
        if config is not None and overrides:
            raise TypeError("pass either a config or keyword overrides, not both")
        options = getattr(config, "options", config)  # a StrategyConfig holds the policy's options
        if config is None:
            options = allocator_options(**overrides)
        if not isinstance(options, AllocatorOptions):
            name = getattr(config, "name", type(options).__name__)
            raise ValueError(f"{name!r} is not a budget allocator strategy but a rollout policy's; build it with "
                             "cobarl.policies.make_policy")
        self.config = options
        self.success: SuccessRule = success_rule(self.config.success)
        self.stats, self.tracker = self._fresh_state()
        self.last: Allocation | None = None
        self._plan_params: tuple[float, float] | None = None  # (alpha, beta) the last plan used
        self._step_failure_rate: float | None = None  # F_t of the last observed step

    def _fresh_state(self) -> tuple[PromptStats | RecentRolloutStats, CapabilityTracker]:
        c = self.config
        if c.stats == "appearances":
            stats = PromptStats(stats_window=c.stats_window, estimator=c.estimator, prior=c.prior)
        else:
            stats = RecentRolloutStats(rollouts=c.recent_rollouts, min_rollouts=c.min_rollouts)
        tracker = CapabilityTracker(
            kappa=c.kappa,
            window=c.window,
            gamma=c.gamma,
            schedule=c.schedule,
            fixed_alpha=c.fixed_alpha,
            fixed_beta=c.fixed_beta,
            total_steps=c.total_steps,
        )
        return stats, tracker

    # --- what the next plan will use (public, so integrations never reach into internals) --------

    def params(self) -> tuple[float, float]:
        """(alpha, beta) the next plan uses."""
        return self.tracker.params()

    def pass_rates(self, prompt_ids: Sequence[Any]) -> np.ndarray:
        """``[M]`` pass-rate estimates the next plan uses."""
        return self.stats.pass_rates(prompt_ids)

    def seen(self, prompt_ids: Sequence[Any]) -> np.ndarray:
        """``[M]`` bool: prompts the strategy's statistics count as seen."""
        return self.stats.seen(prompt_ids)

    def value(self) -> object:
        """The value function the next plan will maximise: the strategy's registered value (``VALUES``),
        built from the resolved config and the capability's (alpha, beta)."""
        return VALUES.get(self.config.value).for_allocator(self.config, self.params())

    # --- the step loop -----------------------------------------------------------------------------

    def plan(self, prompt_ids: Sequence[Any], total_budget: int) -> Allocation:
        """Counts for ``prompt_ids`` (aligned with them) that sum to ``total_budget``."""
        ids = as_id_list(prompt_ids)
        if len(set(ids)) != len(ids):
            dup = next(pid for i, pid in enumerate(ids) if pid in ids[:i])
            raise ValueError(f"prompt id {dup!r} appears twice in one plan; plan each prompt once and give it a larger budget")
        c = self.config
        pass_rates, seen = self.pass_rates(ids), self.seen(ids)
        self._plan_params = self.params()
        self.last = allocate(
            pass_rates,
            total_budget,
            min_budget=c.min_budget,
            max_budget=c.max_budget,
            value=self.value(),
            method=c.method,
            seen=seen,
        )
        # The estimates the plan was made from, for reports (budget vs estimated pass rate).
        self.last.diagnostics.update(pass_rates=pass_rates, seen=seen)
        return self.last

    def observe(self, group_ids: Sequence[Any], rewards: np.ndarray) -> dict[str, float]:
        """Update stats and capability from one step's rollouts.

        ``group_ids[j]`` is the prompt of rollout j and ``rewards[j]`` its raw scalar reward; the
        strategy's success rule (``config.success``) decides which rollouts succeeded.
        """
        _, successes, attempts = self.stats.observe(group_ids, rewards, success=self.success)
        rates = successes / attempts
        self.tracker.update(rates)
        self._step_failure_rate = 1.0 - float(rates.mean())
        return self.metrics()

    def metrics(self) -> dict[str, float]:
        """This step's metrics in the project's schema (:mod:`cobarl.metrics`): the alpha, beta the
        last plan used, the failure rate the last observed step measured, and the plan's budgets."""
        alpha, beta = self._plan_params or self.params()
        out = {
            M.CAPABILITY_ALPHA: alpha,
            M.CAPABILITY_BETA: beta,
            M.CAPABILITY_FAILURE_RATE_WINDOW: self.tracker.failure_rate,
            M.CAPABILITY_F_TILDE: self.tracker.f_tilde,
            M.CAPABILITY_GLOBAL_PASS_RATE: self.stats.global_pass_rate,
        }
        if self._step_failure_rate is not None:
            out[M.CAPABILITY_FAILURE_RATE] = self._step_failure_rate
        if self.last is not None:
            out.update(budget_metrics(self.last.counts))
            out[M.BUDGET_OBJECTIVE] = self.last.objective
            out[M.PERF_ALLOCATE_S] = self.last.diagnostics["seconds"]
        return out

    # --- checkpoints ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """JSON state: format and version, the resolved config, stats and tracker."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "stats": self.stats.state_dict(),
            "tracker": self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """All or nothing: a state from another format, version or configuration is refused
        before anything changes (resuming with another strategy or window would silently mix two
        runs' statistics)."""
        check_state_format(state, STATE_FORMAT, STATE_VERSION)
        diff = option_changes(self.config.to_dict(), state["config"], AllocatorOptions)
        if diff:
            raise ValueError("allocator state was saved with another configuration: " + "; ".join(diff))
        stats, tracker = self._fresh_state()
        stats.load_state_dict(state["stats"])
        tracker.load_state_dict(state["tracker"])
        self.stats, self.tracker = stats, tracker
