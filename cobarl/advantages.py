"""GRPO advantages for groups of any size, grouped by id (never by reshape).

Stage 6 of the data flow (after rollout and rewards). With adaptive budgets one prompt may have
40 rollouts and another 2, so ``rewards.view(-1, G)`` is wrong; every statistic here is taken per
group id.

Choices, documented once: a group of one, or whose rewards are all equal, carries no comparison
and gets advantage 0 (verl would give a singleton its raw reward); such groups are counted in
``num_degenerate_groups``. The standard deviation is the unbiased one (as TRL and verl), and
``A = (r - mean) / (std + eps)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.stats import checked_rewards

SCALES = ("group", "none")


@dataclass(frozen=True)
class GroupAdvantages:
    """Attributes:
    advantages: ``[N]`` per-rollout advantage.
    group_index: ``[N]`` dense index of each rollout's group (order of first appearance).
    group_size: ``[G]`` rollouts per group.
    mixed: ``[G]`` bool, the group holds at least two distinct rewards (a non-zero gradient).
    effective_ratio: share of rollouts in mixed groups.
    num_groups, num_degenerate_groups: groups in all, and those of size 1 or all-equal rewards.
    """

    advantages: np.ndarray
    group_index: np.ndarray
    group_size: np.ndarray
    mixed: np.ndarray
    effective_ratio: float
    num_groups: int
    num_degenerate_groups: int

    def metrics(self) -> dict[str, float]:
        return {
            M.ROLLOUT_EFFECTIVE_RATIO: self.effective_ratio,
            M.ROLLOUT_DEGENERATE_GROUPS: float(self.num_degenerate_groups),
            M.ROLLOUT_GROUPS: float(self.num_groups),
        }


def group_advantages(
    rewards: np.ndarray, group_ids: Sequence[Any] | np.ndarray, *, scale: str = "group", eps: float = 1e-6
) -> GroupAdvantages:
    """Per-rollout GRPO advantages grouped by ``group_ids``.

    Args:
        rewards: ``[N]`` finite rewards.
        group_ids: ``[N]`` prompt id of each rollout (any hashable: int, str).
        scale: ``"group"`` divides by the group's std (GRPO); ``"none"`` only centres (Dr. GRPO).
        eps: added to the std.

    >>> adv = group_advantages(np.array([1.0, 0.0, 1.0, 1.0, 0.0]), ["a", "a", "b", "b", "c"])
    >>> adv.advantages.round(4), adv.effective_ratio, adv.num_degenerate_groups
    (array([ 0.7071, -0.7071,  0.    ,  0.    ,  0.    ]), 0.4, 2)
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    r, ids = _checked(rewards, group_ids)
    index: dict[Any, int] = {}
    inv = np.fromiter((index.setdefault(g, len(index)) for g in ids), dtype=np.int64, count=len(ids))
    n_groups = len(index)
    size = np.bincount(inv, minlength=n_groups)
    mean = np.bincount(inv, weights=r, minlength=n_groups) / np.maximum(size, 1)
    centred = r - mean[inv]
    sq = np.bincount(inv, weights=centred**2, minlength=n_groups)
    std = np.sqrt(sq / np.maximum(size - 1, 1))
    # Mixed means two distinct rewards, tested exactly rather than via std > tol.
    mixed = (np.bincount(inv, weights=(r != r[_first_index(inv, n_groups)][inv]), minlength=n_groups) > 0) & (size > 1)
    adv = centred / (std[inv] + eps) if scale == "group" else centred
    adv = np.where(mixed[inv], adv, 0.0)
    n = max(len(ids), 1)
    return GroupAdvantages(
        advantages=adv,
        group_index=inv,
        group_size=size,
        mixed=mixed,
        effective_ratio=float(size[mixed].sum() / n),
        num_groups=n_groups,
        num_degenerate_groups=int(n_groups - mixed.sum()),
    )


def _checked(rewards: np.ndarray, group_ids: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, list]:
    """Rewards as float64 and ids as a list, one per rollout, every reward finite (else ValueError)."""
    ids = np.asarray(group_ids).tolist() if isinstance(group_ids, np.ndarray) else list(group_ids)
    return checked_rewards(ids, rewards), ids


def _first_index(inv: np.ndarray, n_groups: int) -> np.ndarray:
    """``[G]`` position of each group's first rollout."""
    first = np.full(n_groups, inv.size, dtype=np.int64)
    np.minimum.at(first, inv, np.arange(inv.size))
    return first


def effective_ratio(rewards: np.ndarray, group_ids: Sequence[Any] | np.ndarray) -> float:
    """Share of rollouts in groups with at least two distinct rewards (non-zero GRPO gradient)."""
    return group_advantages(rewards, group_ids).effective_ratio


def baseline_advantages(
    rewards: np.ndarray, group_ids: Sequence[Any] | np.ndarray, baselines: Mapping[Any, tuple[float, float]],
    *, scale_by_std: bool = False, eps: float = 1e-6, float32: bool = False,
) -> np.ndarray:
    """Per-rollout advantages against a given per-group baseline instead of the rows' own group stats.

    ``A_j = r_j - mean_g`` (``/ (std_g + eps)`` with ``scale_by_std``), where ``(mean_g, std_g) =
    baselines[group_ids[j]]``: e.g. Reinforce-Ada's statistics of a prompt's whole pool of samples,
    of which only some rows are trained on (``cobarl.policies.Kept.baselines``). Unlike
    :func:`group_advantages`, a group whose trained rows are all equal keeps a non-zero advantage
    when its baseline differs from them. A NaN reward (a rollout no reward function could score) gets 0.

    Args:
        rewards: ``[N]`` rewards of the rows that train (finite, or NaN: unscorable).
        group_ids: ``[N]`` group (prompt) id of each row.
        baselines: ``{group_id: (mean, std)}``, an entry for every id in ``group_ids``.
        scale_by_std: divide by ``std + eps``.
        eps: added to the std.
        float32: compute in float32 operations from the float32 rewards, means, stds and eps, as torch
            does on float32 tensors (``cobarl.policies.Kept.float32``: verl's GRPO for DAPO and GRESO);
            the result is returned as float64 holding those float32 values.

    >>> baseline_advantages(np.array([1.0, 0.0, 1.0]), ["a", "a", "b"], {"a": (0.25, 0.5), "b": (1.0, 0.0)})
    array([ 0.75, -0.25,  0.  ])
    >>> baseline_advantages(np.array([1.0, 0.0]), ["a", "a"], {"a": (0.25, 0.5)}, scale_by_std=True).round(4)
    array([ 1.5, -0.5])
    """
    r = np.asarray(rewards, dtype=np.float64)
    scored = ~np.isnan(r)
    r, ids = _checked(np.where(scored, r, 0.0), group_ids)  # an infinite reward is refused
    missing = next((g for g in ids if g not in baselines), None)
    if missing is not None:
        raise KeyError(f"no baseline for group {missing!r}; baselines must cover every group id")
    stats = np.array([baselines[g] for g in ids], dtype=np.float64).reshape(len(ids), 2)
    if not np.isfinite(stats).all() or (stats[:, 1] < 0).any():
        raise ValueError("baselines must be finite (mean, std) pairs with std >= 0")
    if float32:  # each operation rounded to float32, as torch's: (r - mean) / (std + eps)
        r32, mean32, std32 = r.astype(np.float32), stats[:, 0].astype(np.float32), stats[:, 1].astype(np.float32)
        adv = (r32 - mean32) / (std32 + np.float32(eps)) if scale_by_std else r32 - mean32
        return np.where(scored, adv.astype(np.float64), 0.0)
    adv = r - stats[:, 0]
    return np.where(scored, adv / (stats[:, 1] + eps) if scale_by_std else adv, 0.0)
