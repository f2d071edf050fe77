"""Completions -> scores."""

from cobarl.rewards.exact import exact_match_reward

__all__ = ["exact_match_reward"]
