"""Reinforce-Ada (arXiv 2510.04996): sample in rounds, stop a prompt once its pool has enough
signal, train on a balanced group of n, with a baseline from every sample of the pool.

Pure rules first, written from ``RLHFlow/Reinforce-Ada`` at 05be605
(``RayPPOTrainer._generate_multi_round_adaptive_downsampling`` and the global-statistics branch of
``compute_grpo_outcome_advantage``) and checked on vectors that code produced
(``tests/data/parity_reinforce_ada.json``); then the policy that runs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cobarl.options import OptionSet, option
from cobarl.policies.base import Kept, Request, RolloutPolicy, register_policy
from cobarl.strategies import register_strategy

CHOICES = ("balanced", "positive_focused")
STD_FLOOR = 1e-6  # the public code clamps the pool std and adds the same epsilon


def has_exited(n_pos: int, n_neg: int, n: int, choice: str) -> bool:
    """The exit test after a round: balanced needs ``n//2`` positives and ``n - n//2`` negatives,
    positive-focused one positive."""
    if choice == "balanced":
        return n_pos >= n // 2 and n_neg >= n - n // 2
    if choice == "positive_focused":
        return n_pos >= 1
    raise ValueError(f"unknown Reinforce-Ada choice {choice!r}; valid: {', '.join(CHOICES)}")


def is_positive(rewards: np.ndarray, threshold: float) -> np.ndarray:
    """A rollout is positive when its reward is above the threshold, strictly, as the public code compares
    them: the float32 reward (its exact value, via ``.tolist()``) against the float64 threshold. So a reward
    equal to the threshold is negative at 0.7 (float32(0.7) = 0.699999988) but positive at 0.1, 0.3 or 0.6,
    whose float32 images round up (float32(0.1) = 0.100000001)."""
    return np.asarray(rewards, dtype=np.float32).astype(np.float64) > float(threshold)


def downsample(positive: np.ndarray, n: int, choice: str, finished: bool) -> np.ndarray:
    """Indices (into the prompt's pool, generation order) of the rows it trains on: the earliest kept
    positives, then the earliest kept negatives.

    A finished prompt keeps ``min(n//2, pos)`` positives and ``n`` minus those in negatives; an
    unfinished balanced one aims at ``n//2`` and ``n - n//2``; an unfinished positive-focused one at
    its pool's share of positives, at least 1 and at most ``take - 1``. A short group is topped up
    from the positives if any are left, else from the negatives (one side only, as the public code).
    """
    pos = np.flatnonzero(positive)
    neg = np.flatnonzero(~np.asarray(positive, dtype=bool))
    if finished:
        take = n
        k_pos = min(n // 2, pos.size)
        k_neg = min(n - k_pos, neg.size)
    else:
        take = min(n, pos.size + neg.size)
        if choice == "balanced":
            want_pos, want_neg = n // 2, n - n // 2
        else:
            want_pos = max(min(math.ceil(pos.size / (pos.size + neg.size) * n), take - 1), 1)
            want_neg = take - want_pos
        k_pos, k_neg = min(pos.size, want_pos), min(neg.size, want_neg)
    short = take - k_pos - k_neg
    if short > 0 and pos.size > k_pos:
        k_pos += min(pos.size - k_pos, short)
    elif short > 0 and neg.size > k_neg:
        k_neg += min(neg.size - k_neg, short)
    return np.concatenate([pos[:k_pos], neg[:k_neg]])


def pool_baseline(rewards: np.ndarray, positive: np.ndarray, mode: str) -> tuple[float, float]:
    """(mean, std) of a prompt's whole pool: ``"counts"`` rebuilds the pool as its positives' ones and
    negatives' zeros (the public code, which assumes 0/1 rewards), ``"mean"`` uses the rewards.
    The std is the unbiased one, at least 1e-6; a pool of at most one row gives (0, 1)."""
    values = np.asarray(positive, dtype=np.float32) if mode == "counts" else np.asarray(rewards, dtype=np.float64)
    if values.size <= 1:
        return 0.0, 1.0
    mean = np.float32(positive.sum()) / np.float32(values.size) if mode == "counts" else values.mean()
    return float(mean), max(float(values.std(ddof=1)), STD_FLOOR)


@dataclass(frozen=True)
class ReinforceAdaOptions(OptionSet):
    """Reinforce-Ada's options (``run_reinforce_ada.sh`` settings)."""

    variant: str = option("balanced", "Reinforce-Ada: 'balanced' (rounds until >= n/2 correct and n/2 wrong) or "
                          "'positive_focused' (until one correct; the strategy reinforce-ada-pos).", choices=CHOICES)
    round_size: int | None = option(
        None, "Reinforce-Ada: rollouts per active prompt per round (M; default: 2 x the rollouts trained per prompt, "
        "the public script's 8 for 4).", ge=1)
    max_rounds: int = option(4, "Reinforce-Ada: most rounds per step (N; public: 4).", ge=1)
    positive_threshold: float = option(0.7, "Reinforce-Ada: a rollout is positive when its reward is above this (public: 0.7).")
    pool_baseline: str = option(
        "counts", "Reinforce-Ada baseline: 'counts' (public: pass rate of the prompt's whole pool, rewards must be 0 or 1) "
        "or 'mean' (mean reward of the whole pool, any rewards).", choices=("counts", "mean"))
    scale_by_std: bool = option(False, "Reinforce-Ada: divide advantages by the pool's std (public script: false).")


@register_policy("reinforce-ada")
class ReinforceAdaPolicy(RolloutPolicy):
    """Rounds of ``round_size`` rollouts per active prompt (default 2n), at most ``max_rounds``; n trained
    per prompt (``total_budget / prompts``). Rollouts generated per step vary between prompts x round_size and
    prompts x round_size x max_rounds."""

    Options = ReinforceAdaOptions
    own_baselines = True
    pool_baselines = True
    baselines_are = "its pool's statistics (see its options, e.g. scale_by_std)"
    per_prompt = True  # exits, kept rows and the pool baseline are each prompt's own
    decides = "between generation rounds"

    def begin(self, prompt_ids: list, total_budget: int) -> Request:
        c = self.options
        n = total_budget // len(prompt_ids)
        self.round_size = c.round_size or 2 * n
        if total_budget % len(prompt_ids) or not 1 <= n <= self.round_size:
            raise ValueError(f"{self.config.name} trains n = total_budget / prompts rollouts per prompt; got total_budget "
                             f"{total_budget} for {len(prompt_ids)} prompts (n must be a whole number <= round_size "
                             f"{self.round_size})")
        self.n = n
        self.order = list(prompt_ids)
        self.rows: dict = {pid: [] for pid in prompt_ids}  # step row indices of each prompt's pool
        self.values: dict = {pid: [] for pid in prompt_ids}
        self.finished: set = set()
        self.round, self.seen_rows = 0, 0
        return {pid: self.round_size for pid in prompt_ids}

    def after_round(self, ids: list, rewards: np.ndarray) -> Request:
        c = self.options
        scored = rewards[~np.isnan(rewards)]
        if c.pool_baseline == "counts" and not np.isin(scored, (0.0, 1.0)).all():
            bad = scored[~np.isin(scored, (0.0, 1.0))][0]
            raise ValueError(f"{self.config.name} with pool_baseline='counts' (the public code) needs rewards of 0 or 1, "
                             f"got {bad!r}; use pool_baseline='mean' for other rewards")
        for j, (pid, r) in enumerate(zip(ids, rewards.tolist())):
            self.rows[pid].append(self.seen_rows + j)
            self.values[pid].append(r)
        self.seen_rows += len(ids)
        self.round += 1
        for pid in dict.fromkeys(ids):
            pos = int(is_positive(self.values[pid], c.positive_threshold).sum())
            if has_exited(pos, len(self.values[pid]) - pos, self.n, self.options.variant):
                self.finished.add(pid)
        if self.round >= c.max_rounds:
            return {}
        return {pid: self.round_size for pid in self.order if pid not in self.finished}

    def finish(self) -> Kept:
        c = self.options
        rows, baselines = [], {}
        for pid in self.order:
            values = np.nan_to_num(np.asarray(self.values[pid]), nan=0.0)  # an unscorable rollout counts as wrong
            positive = is_positive(values, c.positive_threshold)
            keep = downsample(positive, self.n, self.options.variant, pid in self.finished)
            rows.extend(np.asarray(self.rows[pid])[keep].tolist())
            baselines[pid] = pool_baseline(values, positive, c.pool_baseline)
        self.unfinished = len(self.order) - len(self.finished)
        return Kept(np.asarray(rows, dtype=np.int64), baselines, scale_by_std=c.scale_by_std)

    def metrics(self) -> dict[str, float]:
        from cobarl import metrics as M

        out = super().metrics()
        if self.last is not None:
            out[M.ROLLOUT_UNFINISHED] = float(self.unfinished)
        return out


register_strategy("reinforce-ada", "reinforce-ada", "Reinforce-Ada balanced: rounds until >= n/2 correct and wrong, "
                  "keep n, pool-mean baseline")
register_strategy("reinforce-ada-pos", "reinforce-ada", "Reinforce-Ada positive-focused: rounds until one correct, keep "
                  "n, pool-mean baseline", variant="positive_focused")
