"""cobarl: capability-oriented rollout budget allocation (CoBA-RL) for GRPO / RLVR post-training.

Data flow: stats -> capability -> value -> allocate -> rollout -> rewards -> advantages -> update.
The names below are the public API; trainers live in ``cobarl.train`` and integrations in
``cobarl.integrations`` (optional extras).
"""

from cobarl.advantages import GroupAdvantages, effective_ratio, group_advantages
from cobarl.allocation import METHODS, Allocation, allocate, budget_metrics, budget_problem
from cobarl.allocator import STRATEGIES, Allocator, AllocatorConfig, Strategy
from cobarl.capability import CapabilityTracker, beta_params, psi
from cobarl.stats import PromptStats, RecentRolloutStats, SuccessRule, group_outcomes, success_rule
from cobarl.value import VALUES, CobaValue, KnapsackValue, as_value

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "STRATEGIES",
    "VALUES",
    "Allocation",
    "Allocator",
    "AllocatorConfig",
    "CapabilityTracker",
    "CobaValue",
    "GroupAdvantages",
    "KnapsackValue",
    "PromptStats",
    "RecentRolloutStats",
    "Strategy",
    "SuccessRule",
    "allocate",
    "as_value",
    "beta_params",
    "budget_metrics",
    "budget_problem",
    "effective_ratio",
    "group_advantages",
    "group_outcomes",
    "psi",
    "success_rule",
]
