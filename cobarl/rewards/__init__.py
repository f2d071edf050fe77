"""Completions -> scores."""

from cobarl.rewards.exact import exact_match_reward
from cobarl.rewards.math import MathVerifier, math_reward
from cobarl.rewards.registry import REWARDS, GuardedReward, load_reward, register_reward, resolve_reward

__all__ = [
    "REWARDS",
    "GuardedReward",
    "MathVerifier",
    "exact_match_reward",
    "load_reward",
    "math_reward",
    "register_reward",
    "resolve_reward",
]
