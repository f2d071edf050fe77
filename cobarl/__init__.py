"""cobarl: capability-oriented rollout budget allocation (CoBA-RL) for GRPO / RLVR post-training.

Data flow: stats -> capability -> value -> allocate -> rollout -> rewards -> advantages -> update.
The names below are the public API; trainers live in ``cobarl.train`` and integrations in
``cobarl.integrations`` (optional extras).
"""

from cobarl.advantages import GroupAdvantages, effective_ratio, group_advantages
from cobarl.allocation import METHODS, Allocation, allocate, budget_metrics, budget_problem
from cobarl.allocator import Allocator, AllocatorOptions
from cobarl.capability import CapabilityTracker, beta_params, psi
from cobarl.stats import PromptStats, RecentRolloutStats, SuccessRule, group_outcomes, success_rule
from cobarl.strategies import STRATEGIES, Strategy
from cobarl.value import VALUES, CobaValue, KnapsackValue, as_value
from cobarl.policies import POLICIES, StrategyConfig, make_policy  # noqa: E402  (registers every strategy)

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "POLICIES",
    "STRATEGIES",
    "VALUES",
    "Allocation",
    "Allocator",
    "AllocatorOptions",
    "CapabilityTracker",
    "CobaValue",
    "GroupAdvantages",
    "KnapsackValue",
    "PromptStats",
    "RecentRolloutStats",
    "Strategy",
    "StrategyConfig",
    "SuccessRule",
    "allocate",
    "as_value",
    "beta_params",
    "budget_metrics",
    "budget_problem",
    "effective_ratio",
    "group_advantages",
    "group_outcomes",
    "make_policy",
    "psi",
    "success_rule",
]
