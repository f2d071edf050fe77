"""PODS (arXiv 2504.13818): generate more rollouts per prompt than train, and train on the subset
of the group with the largest reward variance.

Written from ``YixuanEvenXu/pods`` at 187f43b (``open-r1/src/open_r1/grpo_trainer.py``, the
max-variance down-sampling block) and checked on vectors that code produced
(``tests/data/parity_pods.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cobarl.options import OptionSet, option
from cobarl.policies.base import Kept, Request, RolloutPolicy, register_policy
from cobarl.strategies import register_strategy


def max_variance_subset(rewards: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m rows PODS trains on, as the public code picks them.

    Intended rule: among the subsets "the i highest and the m - i lowest rewards" (i = 0..m), the
    one with the largest variance. The public code writes each better candidate into the head of
    its sorted order (a tensor view), so later candidates are built from the modified order; cobarl
    does the same, so the subset can be short of the true maximum (for [1, 0, 1, 0, 1, 0, 1, 0] and
    m = 4 it keeps one 1 and three 0s). Variance is the unbiased one; a candidate must beat the best
    strictly (by more than float32 rounding: the public code compares float32 variances, so an exact
    tie there is decided by rounding, here by order: the earlier candidate stays); for m = 1 (variance
    undefined) the top row is kept. Ties in reward are ordered by index (the public sort leaves them
    unspecified).
    """
    r = np.asarray(rewards, dtype=np.float32).astype(np.float64)
    if not 1 <= m <= r.size:
        raise ValueError(f"cannot keep {m} of {r.size} rollouts")
    order = np.argsort(-r, kind="stable")
    if m == 1:
        return order[:1].copy()
    best = float(np.var(r[order[:m]], ddof=1))
    for i in range(m):
        cand = np.concatenate([order[:i], order[r.size - (m - i):]])
        var = float(np.var(r[cand], ddof=1))
        if var > best + 1e-6 * max(abs(best), 1e-12):
            best = var
            order[:m] = cand
    return order[:m].copy()


@dataclass(frozen=True)
class PodsOptions(OptionSet):
    generate_size: int | None = option(
        None, "PODS: rollouts generated per prompt, of which the per-prompt budget is trained (pods_full_size; "
        "default: 4 x the per-prompt budget).", ge=2)


@register_policy("pods")
class PodsPolicy(RolloutPolicy):
    """One round of ``generate_size`` rollouts per prompt; n = total_budget / prompts of them train."""

    Options = PodsOptions
    per_prompt = True  # each group's max-variance subset is its own

    def begin(self, prompt_ids: list, total_budget: int) -> Request:
        if total_budget % len(prompt_ids):
            raise ValueError(f"pods trains n = total_budget / prompts rollouts per prompt; got total_budget {total_budget} "
                             f"for {len(prompt_ids)} prompts")
        self.n = total_budget // len(prompt_ids)
        size = self.options.generate_size or 4 * self.n
        if size < self.n:
            raise ValueError(f"pods generate_size ({size}) is below the rollouts trained per prompt ({self.n})")
        if self.n < size < 2 * self.n - 1:  # the in-place candidate order (max_variance_subset) then repeats rows
            raise ValueError(f"pods generate_size ({size}) lies between n + 1 and 2n - 2 for n = {self.n}: there the public "
                             f"max-variance selection can pick one rollout twice; use generate_size = {self.n} (train "
                             f"every rollout) or >= {2 * self.n - 1} (default 4n = {4 * self.n})")
        return {pid: size for pid in prompt_ids}

    def after_round(self, ids: list, rewards: np.ndarray) -> Request:
        self.ids, self.rewards = ids, np.nan_to_num(rewards, nan=0.0)
        return {}

    def finish(self) -> Kept:
        groups: dict = {}
        for j, pid in enumerate(self.ids):
            groups.setdefault(pid, []).append(j)
        rows = []
        for members in groups.values():
            members = np.asarray(members)
            rows.extend(members[max_variance_subset(self.rewards[members], self.n)].tolist())
        return Kept(np.asarray(rows, dtype=np.int64))


register_strategy("pods", "pods", "PODS: generate generate_size per prompt, train on the max-variance subset of n")
