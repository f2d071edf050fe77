"""Completions -> scores: the built-in rewards, registered here (the registry itself holds none)."""

from cobarl.rewards.exact import exact_match_reward
from cobarl.rewards.guard import GuardedReward
from cobarl.rewards.math import MathVerifier, math_reward
from cobarl.rewards.registry import REWARDS, load_reward, register_reward, resolve_reward

register_reward("exact", exact_match_reward, bounded=True)
# A killable worker process bounds each call; a run builds its own verifier with its limits.
register_reward("math", math_reward, bounded=True,
                configure=lambda timeout, workers: MathVerifier(timeout=timeout, workers=workers))

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
