"""Baseline allocation policies: uniform GRPO and the two papers' public allocation code.

``coba_reference`` is CoBA-RL's ``BetaAllocator.allocate`` (Within-yao/CoBA-RL @ aa6b834,
``recipe/coba_rl/budget_allocators.py``) and ``knapsack_rl`` is Knapsack-RL's
``sampling_budget_by_knapsack`` (liziniu/KnapsackRL @ 05eeb92,
``verl/trainer/ppo/exploration_utils.py``), rule for rule, including their floating-point
arithmetic where it decides ties (``tests/data/parity_*.json`` holds vectors produced by the public
code). Where the public code breaks its own budget (hands out fewer or more rollouts than asked,
exceeds its maximum, or raises), we keep cobarl's contract; ``docs/method.md`` lists every such case.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from numpy.lib.stride_tricks import sliding_window_view

from cobarl.allocation.greedy import heap, threshold
from cobarl.value import is_concave


def uniform(m: int, total_budget: int) -> np.ndarray:
    """Plain GRPO: ``total_budget // M`` each, the remainder one by one to the first prompts."""
    counts = np.full(m, total_budget // m, dtype=np.int64)
    counts[: total_budget % m] += 1
    return counts


def _fill(counts: np.ndarray, idx: np.ndarray, amount: int, hi: int) -> int:
    """Spread ``amount`` evenly over ``counts[idx]`` (in place), capped at ``hi``, until it is gone
    or every prompt is full; returns what did not fit. cobarl's rule for budget the public code
    would lose or put above its maximum."""
    while amount > 0:
        open_ = idx[counts[idx] < hi]
        if open_.size == 0:
            break
        per, extra = divmod(amount, open_.size)
        give = np.minimum(per + (np.arange(open_.size) < extra), hi - counts[open_])
        counts[open_] += give
        amount -= int(give.sum())
    return amount


def _even(counts: np.ndarray, idx, amount: int) -> None:
    """``amount // k`` to each of ``idx``, one more to the first ``amount % k`` (no cap), as the public code."""
    per, extra = divmod(amount, len(idx))
    counts[np.asarray(idx, dtype=np.int64)] += per + (np.arange(len(idx)) < extra)


# --- CoBA-RL: BetaAllocator.allocate ----------------------------------------------------------------

def coba_reference(
    value: Callable, p: np.ndarray, total_budget: int, lo: int, hi: int, seen: np.ndarray
) -> tuple[np.ndarray, dict]:
    """CoBA-RL's public ``BetaAllocator.allocate``.

    * all prompts unseen: uniform; unseen among seen: p = 0.5;
    * every prompt starts at ``lo``; very hard (p < 0.05), very easy (p > 0.99), exploration (rest);
    * the heap (Algorithm 1) spends ``int(R * r)`` of the free budget R on exploration prompts only,
      r = 0.8 if they are more than half the batch, else 0.6 + 0.4 |E| / M (0.6 if none);
      ``value`` with ``tau="adaptive"`` takes tau from the exploration prompts, as the public code;
    * the leftover goes to very hard, then exploration, then very easy prompts by
      :func:`_weighted_leftover`. What the public code leaves unspent after the last class (near
      ``M * hi``) is spread evenly over prompts below ``hi`` (cobarl's contract).
    """
    m = p.shape[0]
    if not seen.any():
        return uniform(m, total_budget), {"exploration": 0, "exploration_share": 0.0, "unspent": 0}
    p = np.where(seen, p, 0.5)
    counts = np.full(m, lo, dtype=np.int64)
    free = total_budget - lo * m
    hard = np.flatnonzero(p < 0.05)
    easy = np.flatnonzero(p > 0.99)
    explore = np.flatnonzero((p >= 0.05) & (p <= 0.99))
    if explore.size == 0:
        share = 0.6
    elif explore.size > m / 2:
        share = 0.8
    else:
        share = 0.6 + (0.8 - 0.6) * (explore.size / m * 2)
    left = free
    heap_budget = int(free * share)
    if explore.size and heap_budget > 0 and free > 0:
        # The heap stops when every exploration prompt is full; the threshold solver hands out
        # the same units (identical counts for concave values), only faster.
        sub_budget = lo * explore.size + min(heap_budget, explore.size * (hi - lo))
        if is_concave(value):
            sub, _ = threshold(value, p[explore], sub_budget, lo, hi)
        else:
            sub = heap(value, p[explore], sub_budget, lo, hi)
        counts[explore] = sub
        left -= int(sub.sum()) - lo * explore.size
    for group in (hard, explore, easy):
        left = _weighted_leftover(counts, group, p, left, hi)
    unspent = left
    _fill(counts, np.arange(m), left, hi)
    return counts, {"exploration": int(explore.size), "exploration_share": share, "unspent": int(unspent)}


def _weighted_leftover(counts: np.ndarray, members: np.ndarray, p: np.ndarray, left: int, hi: int) -> int:
    """``BetaAllocator._allocate_remaining_weighted`` with ``weight_alpha = 1``, same arithmetic.

    Prompts of the class below ``hi`` are visited in batch order; each gets
    ``int(R_now * w / W)`` with ``w = 1 - clip(p, 1e-6, 1 - 1e-6)``, where R_now is the budget
    still left at that moment (so earlier prompts get more), capped at ``hi``; then one pass of
    ``R // k`` each (one more to the first ``R % k``), capped. Returns what is still left. Plain
    Python floats in the public code's order: the truncations decide the counts.
    """
    if left <= 0 or members.size == 0:
        return left
    open_ = [int(i) for i in members if counts[i] < hi]
    if not open_:
        return left
    weights = [1.0 - min(max(float(p[i]), 1e-6), 1.0 - 1e-6) for i in open_]
    total = sum(weights)  # > 0: every weight is at least 1e-6
    for i, w in zip(open_, weights):
        give = min(int(left * w / total), hi - int(counts[i]))
        counts[i] += give
        left -= give
    avail = [i for i in open_ if counts[i] < hi]
    if left > 0 and avail:
        per, extra = divmod(left, len(avail))
        for j, i in enumerate(avail):
            give = min(per + (1 if j < extra else 0), hi - int(counts[i]))
            counts[i] += give
            left -= give
    return left


# --- Knapsack-RL: sampling_budget_by_knapsack ------------------------------------------------------

# ln(1 - alpha) with the public default alpha = 0.9, computed as the public code does.
_LOG_MISS = float(np.log(1 - 0.9))


def knapsack_rl(
    p: np.ndarray, total_budget: int, lo: int, hi: int, seen: np.ndarray, nominal: int
) -> tuple[np.ndarray, dict]:
    """Knapsack-RL's public ``sampling_budget_by_knapsack`` as its runs call it.

    Settings of the paper's runs: ``min_n = negative_n = positive_n = lo``, ``max_n = hi``,
    ``n = nominal``, ``alpha = 0.9``, ``cost_estimation="probability"``, ``allow_fallback=True``.

    * effective prompts (seen, 0 < p < 1) start at ``lo``, seen p = 0 or 1 prompts get ``lo``,
      unseen prompts get ``nominal`` and take no part in the optimisation;
    * with no effective prompt, the rest goes evenly to the "zero" prompts (seen p = 0 **and
      unseen**: the public code reads an unseen prompt's rate as 0), else every prompt gets
      ``nominal`` (here: uniform, which is the same when ``total_budget = M * nominal``);
    * else the knapsack may spend at most ``sum int(min(hi, cost_i))`` with
      ``cost = ln(0.1) / ln(max(p, 1 - p))`` (float32 like the public arrays); the surplus goes
      evenly to the zero prompts, else to every non-effective prompt;
    * the knapsack maximises ``sum g_i(k_i)``, ``g(k) = (1 - p^(k+lo) - (1-p)^(k+lo)) p (1-p)^2``
      for k >= 1 extra rollouts and 0 for k = 0, at exact capacity, by :func:`_knapsack_dp`.

    Deviations (the contract holds where the public code breaks it): shares it would put above
    ``hi`` are capped and the overflow is given to the knapsack, or past its capacity spread evenly
    over prompts below ``hi``; with every prompt effective and the cost below the budget (the
    public code divides by zero) the knapsack gets the whole budget.
    """
    m = p.shape[0]
    effective = seen & (p > 0) & (p < 1)
    zero = np.flatnonzero(~seen | (p == 0))
    eff = np.flatnonzero(effective)
    unseen = int((~seen).sum())
    if unseen and lo * (m - unseen) + nominal * unseen > total_budget:
        # The public code over-commits here and fails its final check; unseen prompts get what fits.
        nominal = (total_budget - lo * (m - unseen)) // unseen
    counts = np.where(seen, lo, nominal).astype(np.int64)
    remaining = total_budget - int(counts.sum())
    info: dict = {"effective": int(eff.size), "fallback": 0, "overflow": 0, "nominal": nominal}
    if remaining > 0 and eff.size == 0:
        if zero.size:
            overflow = _capped_even(counts, zero, remaining, hi)
        else:
            counts[:] = uniform(m, total_budget)
            overflow = 0
        info["overflow"] = overflow
        _fill(counts, np.arange(m), overflow, hi)
        return counts, info
    if remaining <= 0:
        return counts, info
    pe = p[eff]
    with np.errstate(divide="ignore"):
        # float64 cost stored as float32, then truncated: the public arrays' dtype decides int().
        cost = (_LOG_MISS / np.log(np.maximum(pe, 1 - pe))).astype(np.float32)
    # A rate so close to 0 that 1 - p rounds to 1 has log 0 and a -inf cost (the public code then
    # fails in int()); its true cost is unbounded, so it is capped at hi like any large cost.
    estimated = int(sum(int(min(hi, c)) if c >= 0 else hi for c in cost.tolist()))
    if estimated < remaining:
        candidates = zero if zero.size else np.flatnonzero(~effective)
        if candidates.size:
            surplus = remaining - estimated
            info["fallback"] = surplus
            overflow = _capped_even(counts, candidates, surplus, hi)
            info["overflow"] = overflow
            remaining = estimated + overflow
    extra, leftover = _knapsack_dp(pe.astype(np.float32), lo, hi - lo, remaining)
    counts[eff] += extra
    info["overflow"] += leftover
    _fill(counts, np.arange(m), leftover, hi)
    return counts, info


def _capped_even(counts: np.ndarray, idx: np.ndarray, amount: int, hi: int) -> int:
    """The public even split (``amount // k`` each, one more to the first ``amount % k``), with
    each share capped at ``hi``; returns the capped-off overflow."""
    want = counts.copy()
    _even(want, idx, amount)
    over = int(np.maximum(want[idx] - hi, 0).sum())
    counts[idx] = np.minimum(want[idx], hi)
    return over


def _knapsack_gains(p32: np.ndarray, lo: int, k_max: int) -> np.ndarray:
    """``[n, k_max + 1]`` float32 DP values ``g_i(k)``, bit-identical to the public scalar code.

    The public code evaluates ``(1 - p**(k+lo) - (1-p)**(k+lo)) * p * ((1-p)**2)`` on float32
    scalars; numpy's float32 array power with an array exponent gives the same bits (a scalar
    exponent of 2 would take numpy's squaring shortcut instead, hence the array ``two``).
    """
    uniq, inverse = np.unique(p32, return_inverse=True)
    exps = (np.arange(1, k_max + 1) + lo).astype(np.float32)
    pp = uniq[:, None].astype(np.float32)
    q = np.float32(1) - pp
    two = np.full_like(pp, 2)
    g = ((np.float32(1) - pp**exps) - q**exps) * pp * (q**two)
    g = np.concatenate([np.zeros((uniq.size, 1), dtype=np.float32), g], axis=1)
    return g[inverse]


def _knapsack_dp(p32: np.ndarray, lo: int, k_max: int, capacity: int) -> tuple[np.ndarray, int]:
    """Knapsack-RL's ``solve_by_dp``: exact-capacity multiple-choice knapsack, same tie-breaking.

    ``dp[i][w] = max_k dp[i-1][w-k] + g_i(k)`` over k = 0..min(k_max, w), float64 sums of
    float32 gains; a candidate replaces the best only if strictly larger, so the smallest k wins
    ties, and backtracking from the last item decides who gets tied units. Vectorised over w and
    k with the same additions, so the same floating-point ties fall the same way. Returns the
    extra counts and the budget past the items' capacity (``max_usable_budget``'s remainder).
    """
    n = p32.size
    extra = np.zeros(n, dtype=np.int64)
    if capacity <= 0 or n == 0:
        return extra, max(capacity, 0)
    width = min(capacity, n * k_max)  # every w up to the capacity is reachable, none beyond
    gains = _knapsack_gains(p32, lo, k_max).astype(np.float64)
    prev = np.full(width + 1, -np.inf)
    prev[0] = 0.0
    choice = np.zeros((n, width + 1), dtype=np.int16 if k_max < 2**15 else np.int32)
    pad = np.full(k_max, -np.inf)
    for i in range(n):
        reach = min(width, (i + 1) * k_max)
        # cand[w, k] = prev[w - k] + g(k) for w <= reach (prev is -inf below 0 and past i * k_max).
        window = sliding_window_view(np.concatenate([pad, prev[: reach + 1]]), k_max + 1)[:, ::-1]
        cand = window + gains[i]
        best = np.argmax(cand, axis=1)  # first maximum: the smallest k, like the strict '>'
        choice[i, : reach + 1] = best
        prev = np.full(width + 1, -np.inf)
        prev[: reach + 1] = cand[np.arange(reach + 1), best]
    w = width
    for i in range(n - 1, -1, -1):
        k = int(choice[i, w])
        extra[i] = k
        w -= k
    return extra, capacity - width
