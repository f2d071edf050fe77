"""TRL's GRPO rewards and advantages with groups taken by prompt id instead of ``view(-1, num_generations)``.

Pure numpy: `AdaptiveGRPOTrainer` lays each prompt out ``counts[i]`` times, so its groups have
different sizes and TRL's fixed-size reshape cannot find them.
"""

from __future__ import annotations

import numpy as np

TRL_EPS = 1e-4  # TRL divides by (std + 1e-4)


def scalar_rewards(rewards_per_func: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """TRL's scalar reward: the weighted sum over reward functions ignoring NaN; NaN where every function
    returned None (an unscorable rollout)."""
    out = np.nansum(rewards_per_func * weights[None, :], axis=1)
    out[np.isnan(rewards_per_func).all(axis=1)] = np.nan
    return out


def _nan_mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and unbiased std over the finite entries (NaN when there are too few), like TRL's nanstd."""
    x = x[~np.isnan(x)]
    mean = float(x.mean()) if len(x) else float("nan")
    std = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
    return mean, std


def _by_group(values: np.ndarray, index: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-rollout group mean and std of ``values`` (groups given by a dense ``index``)."""
    stats = np.array([_nan_mean_std(values[index == g]) for g in range(n_groups)]).reshape(n_groups, 2)
    return stats[index, 0], stats[index, 1]


def trl_advantages(rewards_per_func: np.ndarray, weights: np.ndarray, group_ids: list, *, scale_rewards: str,
                   aggregation: str) -> np.ndarray:
    """TRL's advantages (1.14-1.16, both ``multi_objective_aggregation`` modes, every ``scale_rewards``)
    with groups taken by prompt id instead of ``view(-1, num_generations)``.

    Unscorable rollouts are left out of every mean and std and get advantage 0, as in TRL.
    """
    _, index = np.unique(np.asarray([str(g) for g in group_ids]), return_inverse=True)
    n_groups = int(index.max()) + 1 if len(index) else 0
    with np.errstate(invalid="ignore", divide="ignore"):
        if aggregation == "sum_then_normalize":
            rewards = scalar_rewards(rewards_per_func, weights)
            mean, std = _by_group(rewards, index, n_groups)
            if scale_rewards == "batch":
                std = np.full_like(rewards, _nan_mean_std(rewards)[1])
            adv = rewards - mean
            if scale_rewards != "none":
                adv = adv / (std + TRL_EPS)
        elif aggregation == "normalize_then_sum":
            normalised = np.empty_like(rewards_per_func)
            for k in range(rewards_per_func.shape[1]):
                mean, std = _by_group(rewards_per_func[:, k], index, n_groups)
                normalised[:, k] = (rewards_per_func[:, k] - mean) / (std + TRL_EPS)
            rewards = np.nansum(normalised * weights[None, :], axis=1)
            rewards[np.isnan(rewards_per_func).all(axis=1)] = np.nan
            mean, std = _nan_mean_std(rewards)
            adv = (rewards - mean) / (std + TRL_EPS)
        else:
            raise ValueError(f"multi_objective_aggregation must be sum_then_normalize or normalize_then_sum, got {aggregation!r}")
    return np.nan_to_num(adv, nan=0.0)
