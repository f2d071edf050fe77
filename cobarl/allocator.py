"""A stateful allocator: statistics + capability + value + solver behind one name.

Trainers (TRL, verl, the simulator) hold one :class:`Allocator` and call, every step::

    plan = allocator.plan(prompt_ids, total_budget)   # counts with the alpha, beta of the last step
    ...roll out plan.counts[i] completions of prompt i and score them...
    allocator.observe(group_ids, rewards)              # stats and capability for the next step

This is the paper's order (A.6): allocate with the previous step's (alpha, beta), roll out, then
update the per-prompt stats and the failure-rate window.

Each strategy runs the way its paper's public code runs it: its own pass-rate estimator, its own
rule for when a reward is a success, its own tau (see :data:`STRATEGIES`); every such default can
be overridden explicitly in :class:`AllocatorConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.allocation import Allocation, allocate, budget_metrics
from cobarl.capability import CapabilityTracker
from cobarl.io import check_state_format
from cobarl.options import check_fields, option
from cobarl.stats import PromptStats, RecentRolloutStats, SuccessRule, as_id_list, success_rule
from cobarl.value import VALUES

STATS_KINDS = ("appearances", "recent-rollouts")
STATE_FORMAT = "cobarl.allocator"
STATE_VERSION = 2


@dataclass(frozen=True)
class Strategy:
    """What one strategy name means.

    Attributes:
        schedule: capability schedule of the tracker (``cobarl.capability.SCHEDULES``).
        method: allocation method (``cobarl.METHODS``).
        value: value family, ``"coba"`` or ``"knapsack"``.
        stats: pass-rate estimator: ``"appearances"`` (CoBA-RL ``BetaAllocator``: successes over a
            prompt's last ``stats_window`` appearances) or ``"recent-rollouts"`` (Knapsack-RL's
            dataset state: mean of the last 16 rollouts, seen after 8).
        success: the paper code's success rule (both count ``reward == 1``).
        tau: CoBA saturation temperature (``"adaptive"``: the public code's variance rule).
        summary: one line for ``--help`` and reports.
        policy: the rollout policy that runs it (``cobarl.policies.POLICIES``): ``"allocator"`` plans
            budgets before generation with this record's stats, value and method; the others decide
            between generation rounds or after generation and read only their own options.
        variant: a policy's variant (Reinforce-Ada's ``"balanced"`` or ``"positive_focused"``).
    """

    schedule: str
    method: str
    value: str
    stats: str
    success: str
    tau: float | str
    summary: str
    policy: str = "allocator"
    variant: str = ""


def _coba(schedule: str, method: str, summary: str, tau: float | str = 8.0) -> Strategy:
    return Strategy(schedule, method, "coba", "appearances", "==1", tau, summary)


def _policy(policy: str, summary: str, variant: str = "") -> Strategy:
    """A policy that is not a budget allocator: the allocator fields are unused placeholders."""
    return dataclasses.replace(_coba("exploit-to-explore", "uniform", summary), policy=policy, variant=variant)


STRATEGIES: dict[str, Strategy] = {
    "uniform": _coba("exploit-to-explore", "uniform", "plain GRPO: the same budget for every prompt"),
    "coba": _coba("exploit-to-explore", "threshold", "CoBA-RL Algorithm 1, solved exactly (threshold solver)"),
    "coba-heap": _coba("exploit-to-explore", "heap", "CoBA-RL Algorithm 1 with the literal heap (same counts, slower)"),
    "coba-reference": _coba(
        "exploit-to-explore", "coba-reference", "CoBA-RL public BetaAllocator (categories, heap share, fallback)", "adaptive"
    ),
    "knapsack-rl": Strategy(
        "exploit-to-explore", "knapsack-rl", "knapsack", "recent-rollouts", "==1", 8.0,
        "Knapsack-RL public policy (cost caps, fallback to p=0 prompts, exact DP)",
    ),
    "knapsack": Strategy(
        "exploit-to-explore", "threshold", "knapsack", "recent-rollouts", "==1", 8.0,
        "Knapsack-RL value solved exactly, without the public code's fallbacks",
    ),
    "fixed-beta": _coba("fixed", "threshold", "CoBA value with a fixed Beta (paper Table 3)"),
    "linear-decay": _coba("linear-decay", "threshold", "CoBA value, alpha stepped down linearly (paper Table 3)"),
    "explore-to-exploit": _coba("explore-to-exploit", "threshold", "CoBA value, alpha follows the success rate (Table 2)"),
    "gvm": Strategy(
        "exploit-to-explore", "gvm", "gvm", "appearances", "==1", 8.0,
        "GVM budgets n ~ 1/sqrt(p + alpha/p^(beta-1)) (p-only mode) on top of min_budget each",
    ),
    "reinforce-ada": _policy(
        "reinforce-ada", "Reinforce-Ada balanced: rounds until >= n/2 correct and wrong, keep n, pool-mean baseline",
        "balanced"),
    "reinforce-ada-pos": _policy(
        "reinforce-ada", "Reinforce-Ada positive-focused: rounds until one correct, keep n, pool-mean baseline",
        "positive_focused"),
    "dapo": _policy("dapo", "DAPO dynamic sampling: drop groups whose rewards are all equal, refill from new prompts"),
    "pods": _policy("pods", "PODS: generate generate_size per prompt, train on the max-variance subset of n"),
    "greso": _policy("greso", "GRESO: skip prompts whose recent groups were all correct or all wrong before generating, "
                     "then DAPO-style dynamic sampling"),
}

# Options that only apply to one kind of statistics: left unset (None) for the other kind, so a
# value that would silently do nothing is refused instead.
_STATS_OPTIONS = {
    "appearances": {"stats_window": 1, "estimator": "empirical", "prior": "half"},
    "recent-rollouts": {"recent_rollouts": 16, "min_rollouts": 8},
}


# The options of one policy (None = its paper default), refused for every other policy.
POLICY_OPTIONS = {
    "reinforce-ada": {"round_size": None, "max_rounds": 4, "positive_threshold": 0.7, "pool_baseline": "counts",
                      "scale_by_std": False},
    "dapo": {"gen_batch_factor": 3, "max_gen_batches": 10},
    "gvm": {"gvm_alpha": 1e-3, "gvm_beta": 2.0},
    "pods": {"generate_size": None},
    "greso": {"greso_sampling_factor": 1.5, "greso_min_sampling_batch": 64, "greso_max_gen_batches": 10,
              "greso_p_easy": 0.5, "greso_p_hard": 0.5, "greso_target_zero_variance": 0.25, "greso_min_p": 0.05,
              "greso_max_p": 0.95},
}
_ADAPTIVE = ("adaptive",)
# Options only the budget allocators read (statistics, capability, value); refused for the other policies.
# min_budget and max_budget are not among them: every strategy carries them (the embedded task presets
# max_budget), and the simulator sizes its common random numbers by max_budget.
_ALLOCATOR_ONLY = ("kappa", "window", "gamma", "tau", "success", "stats", "stats_window", "estimator", "prior",
                   "recent_rollouts", "min_rollouts", "fixed_alpha", "fixed_beta")


@dataclass
class AllocatorConfig:
    """How budgets are chosen each step; every field documents itself (its ``help``), and is a
    ``cobarl train`` flag, a YAML key, a ``cobarl compare`` option and a verl setting at once
    (:mod:`cobarl.options`). ``None`` means "the strategy's paper default"; :meth:`resolved` fills
    those in (an :class:`Allocator` always holds the resolved config).
    """

    strategy: str | Callable = option(
        "coba", "Budget allocator strategy: one of cobarl.STRATEGIES, or (Python) a callable "
        "f(pass_rates, total_budget, min_budget, max_budget) -> counts.", flag="allocator")
    min_budget: int = option(2, "Fewest rollouts per prompt (paper: 2).", ge=1)
    max_budget: int = option(128, "Most rollouts per prompt (paper: 128).", ge=1)
    kappa: float = option(11.0, "alpha + beta of the preference density (paper: 11).", gt=2,
                          why="alpha, beta >= 1 must sum to it")
    window: int = option(1, "k, steps in the failure-rate moving average (public 7B script: 1).", ge=1, aliases=("--k",))
    gamma: float = option(10.0, "Sharpness of Psi below F = 0.5 (paper: 10).", gt=0)
    tau: float | str | None = option(
        None, "Saturation temperature, a number or 'adaptive' (public code: variance-driven in [3, 12]). "
        "Default: 'adaptive' for coba-reference, 8 otherwise.", gt=0, words=_ADAPTIVE)
    success: str | Callable | None = option(
        None, "When a reward counts as a success for the statistics: '>0.5', '==1', '>=1' or (Python) a callable "
        "f(rewards) -> bool array. Default: '==1' (both papers' code; DAPO's +-1 rewards give the same as '>0.5', "
        "a reward with an overlong penalty does not).")
    stats: str | None = option(
        None, "Pass-rate estimator, 'appearances' (CoBA-RL) or 'recent-rollouts' (Knapsack-RL). "
        "Default: the strategy's paper's.", choices=STATS_KINDS)
    stats_window: int | None = option(None, "Appearances per prompt in its estimate (stats=appearances; public code: 1).", ge=1)
    estimator: str | None = option(
        None, "'empirical' (papers) or 'posterior' (Beta-Binomial mean; stats=appearances).", choices=("empirical", "posterior"))
    prior: str | None = option(
        None, "Pass rate of unseen prompts, 'half' (public CoBA code) or 'global' mean (stats=appearances).",
        choices=("half", "global"))
    recent_rollouts: int | None = option(
        None, "Rollouts averaged per prompt (stats=recent-rollouts; public code: 16).", ge=1)
    min_rollouts: int | None = option(
        None, "Rollouts before a prompt counts as seen (stats=recent-rollouts; public code: 8).", ge=1)
    fixed_alpha: float = option(10.5, "alpha for fixed-beta (paper's Table 3: 10.5 or 1.5).", gt=0)
    fixed_beta: float = option(1.5, "beta for fixed-beta (paper's Table 3: 1.5 or 10.5).", gt=0)
    # Reinforce-Ada (RLHFlow/Reinforce-Ada verl fork, run_reinforce_ada.sh settings).
    round_size: int | None = option(
        None, "Reinforce-Ada: rollouts per active prompt per round (M; default: 2 x the rollouts trained per prompt, "
        "the public script's 8 for 4).", ge=1)
    max_rounds: int | None = option(None, "Reinforce-Ada: most rounds per step (N; public: 4).", ge=1)
    positive_threshold: float | None = option(
        None, "Reinforce-Ada: a rollout is positive when its reward is above this (public: 0.7).")
    pool_baseline: str | None = option(
        None, "Reinforce-Ada baseline: 'counts' (public: pass rate of the prompt's whole pool, rewards must be 0 or 1) "
        "or 'mean' (mean reward of the whole pool, any rewards).", choices=("counts", "mean"))
    scale_by_std: bool | None = option(
        None, "Reinforce-Ada: divide advantages by the pool's std (public script: false).")
    # DAPO dynamic sampling (verl-recipe dapo_ray_trainer.py, test_dapo_7b.sh settings).
    gen_batch_factor: int | None = option(
        None, "DAPO: prompts per generation batch, as a multiple of the prompts trained per step (public: 3).", ge=1)
    max_gen_batches: int | None = option(
        None, "DAPO: most generation batches per step before it fails (public: 10; 0 = no cap).", ge=0)
    # GVM (RLHFlow/GVM calc_sample_ratio defaults).
    gvm_alpha: float | None = option(None, "GVM: alpha of the weight 1/sqrt(p + alpha/p^(beta-1)) (public: 0.001).", ge=0)
    gvm_beta: float | None = option(None, "GVM: beta of the weight (public: 2).")
    # PODS (YixuanEvenXu/pods).
    generate_size: int | None = option(
        None, "PODS: rollouts generated per prompt, of which the per-prompt budget is trained (pods_full_size; "
        "default: 4 x the per-prompt budget).", ge=2)
    # GRESO (Infini-AI-Lab/GRESO, math_qwen_1_5b_dm_greso.sh settings).
    greso_sampling_factor: float | None = option(
        None, "GRESO: prompts generated in a step's first round (after skipping), as a multiple of the prompts trained "
        "per step (public: sampling_batch_size 384 / real_train_batch_size 256 = 1.5).", ge=1)
    greso_min_sampling_batch: int | None = option(
        None, "GRESO: fewest prompts in a refill round (public: 64, hard-coded).", ge=1)
    greso_max_gen_batches: int | None = option(
        None, "GRESO: most generation rounds per step before it fails (the public code has no cap; default 10, DAPO's; "
        "0 = no cap).", ge=0)
    greso_p_easy: float | None = option(
        None, "GRESO: initial p_easy; a prompt whose last k groups were all correct is skipped with probability "
        "1 - max(p_easy^k, 0.01) (public: 0.5).", gt=0, le=1)
    greso_p_hard: float | None = option(
        None, "GRESO: initial p_hard, the same for groups all wrong (mean reward <= 0.11) (public: 0.5).", gt=0, le=1)
    greso_target_zero_variance: float | None = option(
        None, "GRESO: target share of zero-variance groups; p_easy steers the all-correct share to 1/3 of it, p_hard the "
        "all-wrong share to 2/3 (public: 0.25).", gt=0, le=1)
    greso_min_p: float | None = option(None, "GRESO: lower bound of p_easy and p_hard (public: 0.05).", ge=0, le=1)
    greso_max_p: float | None = option(None, "GRESO: upper bound of p_easy and p_hard (public: 0.95).", ge=0, le=1)
    total_steps: int | None = option(
        None, "Planned training steps, needed by linear-decay (cobarl train and cobarl compare derive it from the run).",
        ge=1, derived=True)

    def __post_init__(self) -> None:
        if isinstance(self.strategy, str) and self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)} (or a callable)")
        if not isinstance(self.strategy, str) and not callable(self.strategy):
            raise TypeError(f"strategy must be a name or a callable, got {self.strategy!r}")
        errors = check_fields(self)
        if errors:
            raise ValueError("; ".join(errors))
        if self.min_budget > self.max_budget:
            raise ValueError(f"min_budget ({self.min_budget}) is larger than max_budget ({self.max_budget})")
        # Fields left None keep meaning "the strategy's default" (see `resolved`), so that
        # `dataclasses.replace(config, strategy=...)` picks up the new strategy's defaults.
        r = self._resolved_values()
        success_rule(r["success"])  # parse now: a bad rule fails before any work
        for kind, options in _STATS_OPTIONS.items():
            for name in options:
                if kind != r["stats"] and getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to stats={kind!r}, but this allocator uses stats={r['stats']!r}")
        for kind, options in POLICY_OPTIONS.items():
            for name in options:
                if kind != self.policy_kind and getattr(self, name) is not None:
                    raise ValueError(f"{name} is an option of {kind}, not of {self.strategy_name!r}")
        if self.defaults.policy != "allocator":  # a value other than the default would be silently ignored
            d = self.defaults
            own = {"tau": d.tau, "success": d.success, "stats": d.stats, **_STATS_OPTIONS[d.stats]}  # what resolved() fills in
            unused = [f.name for f in fields(self) if f.name in _ALLOCATOR_ONLY
                      and getattr(self, f.name) not in (f.default, own.get(f.name, f.default))]
            if unused:
                raise ValueError(f"{', '.join(unused)}: option(s) of the budget allocators, which {self.strategy_name!r} "
                                 "does not use (it decides by its own options; see cobarl.allocator.POLICY_OPTIONS)")

    @property
    def policy_kind(self) -> str:
        """The options group of this strategy: its policy, or ``"gvm"`` for the GVM allocator."""
        d = self.defaults
        return "gvm" if d.value == "gvm" else d.policy

    @property
    def strategy_name(self) -> str:
        return self.strategy if isinstance(self.strategy, str) else getattr(self.strategy, "__name__", "callable")

    def _resolved_values(self) -> dict[str, Any]:
        d = self.defaults
        stats = self.stats if self.stats is not None else d.stats
        out = {
            "tau": self.tau if self.tau is not None else d.tau,
            "success": self.success if self.success is not None else d.success,
            "stats": stats,
        }
        for name, default in {**_STATS_OPTIONS.get(stats, {}), **POLICY_OPTIONS.get(self.policy_kind, {})}.items():
            out[name] = getattr(self, name) if getattr(self, name) is not None else default
        return out

    def resolved(self) -> AllocatorConfig:
        """This config with every "strategy default" (None) replaced by its value."""
        return AllocatorConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **self._resolved_values()})

    @property
    def defaults(self) -> Strategy:
        """The strategy record (a callable strategy plans with CoBA's statistics)."""
        return STRATEGIES[self.strategy] if isinstance(self.strategy, str) else STRATEGIES["coba"]

    def to_dict(self, *, derived: bool = True) -> dict[str, Any]:
        """JSON-friendly fields (callables by name): the one serialiser of an allocator config, for
        checkpoints, config.yaml, trackers and reports. ``derived=False`` leaves out the fields the trainer
        fills in itself (``total_steps``), as a user's config file holds them."""
        out = asdict(self)
        for name in ("strategy", "success"):
            if callable(out[name]):
                out[name] = getattr(out[name], "__name__", "callable")
        if not derived:
            for f in fields(self):
                if f.metadata.get("derived"):
                    out.pop(f.name)
        return out


class Allocator:
    """Per-prompt stats, capability tracker and solver for one strategy; see the module docstring."""

    def __init__(self, config: AllocatorConfig | None = None, **overrides: Any) -> None:
        if config is not None and overrides:
            raise TypeError("pass either a config or keyword overrides, not both")
        self.config = (config or AllocatorConfig(**overrides)).resolved()
        if self.config.defaults.policy != "allocator":
            raise ValueError(f"{self.config.strategy_name!r} is not a budget allocator but a rollout policy "
                             f"({self.config.defaults.policy}); build it with cobarl.policies.make_policy")
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
            schedule=c.defaults.schedule,
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
        return VALUES.get(self.config.defaults.value).for_allocator(self.config, self.params())

    # --- the step loop -----------------------------------------------------------------------------

    def plan(self, prompt_ids: Sequence[Any], total_budget: int) -> Allocation:
        """Counts for ``prompt_ids`` (aligned with them) that sum to ``total_budget``."""
        ids = as_id_list(prompt_ids)
        if len(set(ids)) != len(ids):
            dup = next(pid for i, pid in enumerate(ids) if pid in ids[:i])
            raise ValueError(f"prompt id {dup!r} appears twice in one plan; plan each prompt once and give it a larger budget")
        c = self.config
        method = c.strategy if callable(c.strategy) else c.defaults.method
        pass_rates, seen = self.pass_rates(ids), self.seen(ids)
        self._plan_params = self.params()
        self.last = allocate(
            pass_rates,
            total_budget,
            min_budget=c.min_budget,
            max_budget=c.max_budget,
            value=self.value(),
            method=method,
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
        mine, saved = self.config.to_dict(), state["config"]
        diff = [f"{f.name}: saved {saved.get(f.name)!r}, now {mine[f.name]!r}" for f in fields(AllocatorConfig)
                if saved.get(f.name) != mine[f.name] and f.name != "total_steps"]
        if diff:
            raise ValueError("allocator state was saved with another configuration: " + "; ".join(diff))
        stats, tracker = self._fresh_state()
        stats.load_state_dict(state["stats"])
        tracker.load_state_dict(state["tracker"])
        self.stats, self.tracker = stats, tracker
