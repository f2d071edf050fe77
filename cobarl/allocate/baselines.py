"""Baseline allocation policies: uniform GRPO and the two public reference code paths.

These reproduce what the released code does (see ``method-notes.md`` A.4 and B.3), not just what
the papers write, so results can be compared with both papers. Where the public code can break
an invariant (counts above ``max_budget``, budgets that do not add up), we keep the invariant and
say so in a comment.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cobarl.allocate.greedy import heap, threshold
from cobarl.value import KnapsackValue, is_concave


def uniform(m: int, budget: int) -> np.ndarray:
    """Plain GRPO: ``budget // M`` each, the remainder one by one to the first prompts."""
    counts = np.full(m, budget // m, dtype=np.int64)
    counts[: budget % m] += 1
    return counts


def _spread(counts: np.ndarray, idx: np.ndarray, amount: int, hi: int, weights: np.ndarray | None = None) -> int:
    """Add ``amount`` units to ``counts[idx]`` (in place), capped at ``hi``; returns what did not fit.

    Shares are ``floor(amount * w / sum(w))`` (uniform without weights), then the remainder one
    unit at a time in index order, as the public code does.
    """
    if amount <= 0 or idx.size == 0:
        return amount
    room = hi - counts[idx]
    w = np.ones(idx.size) if weights is None or weights.sum() <= 0 else weights
    share = np.minimum(np.floor(amount * w / w.sum()).astype(np.int64), room)
    counts[idx] += share
    amount -= int(share.sum())
    while amount > 0:
        open_ = idx[counts[idx] < hi]
        if open_.size == 0:
            break
        step = min(amount, open_.size)
        counts[open_[:step]] += 1
        amount -= step
    return amount


def knapsack_rl(p: np.ndarray, budget: int, lo: int, hi: int, known: np.ndarray) -> tuple[np.ndarray, dict]:
    """Knapsack-RL's public policy (``sampling_budget_by_knapsack``, ``min_n = negative_n = positive_n = lo``).

    * effective prompts (0 < p < 1) start at ``lo``; p = 0 and p = 1 prompts get ``lo``; unseen
      prompts get the nominal ``budget // M`` outside the optimisation;
    * each effective prompt's "cost" ``ln(0.1) / ln(max(p, 1 - p))`` (rollouts for a 90 % chance of
      a mixed group) caps what the solver may spend; the surplus goes uniformly to p = 0 prompts
      (else to every non-effective prompt);
    * the solver maximises ``sum V(lo + k_i)`` with ``V(lo + 0) = 0`` (the DP's quirk) at exact
      capacity. We solve it exactly with the threshold solver instead of the DP.
    """
    m = p.shape[0]
    nominal = budget // m
    effective = known & (p > 0) & (p < 1)
    counts = np.where(known, lo, nominal).astype(np.int64)
    remaining = budget - int(counts.sum())
    zero = np.flatnonzero(known & (p == 0))
    eff = np.flatnonzero(effective)
    info: dict = {"effective": int(eff.size), "fallback": 0}
    if eff.size == 0:
        # No prompt can give a gradient: feed the unsolved ones, else spread evenly.
        left = _spread(counts, zero if zero.size else np.arange(m), remaining, hi)
        _spread(counts, np.arange(m), left, hi)
        return counts, info
    pe = p[eff]
    log_major = np.log(np.maximum(pe, 1 - pe))
    # p within one ulp of 0 or 1 has log 0: an unbounded cost (capped at hi below), not -inf.
    cost = np.where(log_major < 0, np.log(0.1) / np.where(log_major < 0, log_major, -1.0), np.inf)
    estimated = int(np.minimum(hi, cost).astype(np.int64).sum())
    if estimated < remaining:
        surplus = remaining - estimated
        others = zero if zero.size else np.flatnonzero(~effective)
        info["fallback"] = surplus
        # The public code spreads the surplus without a cap; we cap at hi and pass overflow on.
        remaining = estimated + _spread(counts, others, surplus, hi)
    capacity = eff.size * (hi - lo)
    solve = min(remaining, capacity)
    extra, _ = threshold(_KnapsackExtra(lo), pe, solve, 0, hi - lo)
    counts[eff] += extra
    # Past the solver's capacity the public code spreads uniformly over effective prompts (and
    # can exceed max_n); we fill every prompt with room instead.
    _spread(counts, np.arange(m), remaining - solve, hi)
    return counts, info


class _KnapsackExtra:
    """Value of ``k`` extra rollouts on top of ``lo`` as the Knapsack-RL DP scores it: 0 for k = 0."""

    concave = True  # V(lo + 1) >= V(lo + 2) - V(lo + 1) because V(lo) >= 0.

    def __init__(self, lo: int) -> None:
        self.lo = lo
        self.base = KnapsackValue()

    def __call__(self, k: np.ndarray, p: np.ndarray) -> np.ndarray:
        k = np.asarray(k)
        return np.where(k > 0, self.base(self.lo + k, p), 0.0)

    def gain(self, k: np.ndarray, p: np.ndarray) -> np.ndarray:
        k = np.asarray(k)
        return np.where(k > 0, self.base.gain(self.lo + k, p), self.base(self.lo + 1, p))


def coba_reference(
    value: Callable, p: np.ndarray, budget: int, lo: int, hi: int, known: np.ndarray
) -> tuple[np.ndarray, dict]:
    """The public CoBA-RL code path (``BetaAllocator``), reconstructed from method-notes A.4.

    * every prompt starts at ``lo``; unseen prompts count as p = 0.5 (all unseen: uniform);
    * prompts split into very hard (p < 0.05), very easy (p > 0.99) and exploration (the rest);
    * the heap (Algorithm 1) spends a share r of the free budget on exploration prompts only:
      r = 0.8 if they are more than half the batch, else 0.6 + 0.4 |E| / M;
    * the leftover goes to very hard, then exploration, then very easy prompts, in proportion
      to (1 - p) within each class, capped at ``hi``.
    """
    m = p.shape[0]
    if not known.any():
        return uniform(m, budget), {"exploration": 0, "exploration_share": 0.0}
    p = np.where(known, p, 0.5)
    counts = np.full(m, lo, dtype=np.int64)
    free = budget - lo * m
    hard = np.flatnonzero(p < 0.05)
    easy = np.flatnonzero(p > 0.99)
    explore = np.flatnonzero((p >= 0.05) & (p <= 0.99))
    if explore.size == 0:
        share = 0.6
    elif explore.size > m / 2:
        share = 0.8
    else:
        share = 0.6 + 0.2 * (2 * explore.size / m)
    spent = 0
    if explore.size:
        # The heap stops when every exploration prompt is full; the threshold solver hands out
        # the same units (identical counts for concave values), only faster.
        heap_budget = min(int(free * share), explore.size * (hi - lo))
        sub_budget = lo * explore.size + heap_budget
        if is_concave(value):
            sub, _ = threshold(value, p[explore], sub_budget, lo, hi)
        else:
            sub = heap(value, p[explore], sub_budget, lo, hi)
        counts[explore] = sub
        spent = int(sub.sum()) - lo * explore.size
    left = free - spent
    for group in (hard, explore, easy):
        left = _spread(counts, group, left, hi, weights=1.0 - p[group])
    return counts, {"exploration": int(explore.size), "exploration_share": share}
