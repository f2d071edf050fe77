"""Greedy allocation by largest marginal gain: the paper's heap, and an exact fast equivalent.

Both start every prompt at ``lo`` rollouts and hand out the remaining ``R`` units one by one to the
largest gain ``V(B_i + 1) - V(B_i)``, ties to the lower prompt index. For concave values the units
handed out are exactly the ``R`` largest entries of the gain table ``gain[i, b], lo <= b < hi``, so
:func:`threshold` finds the R-th largest gain by bisection instead of popping R times.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import numpy as np

from cobarl.value import bind, is_concave

# Gain tables up to this many entries are sorted whole instead of bisected (faster when small).
SORT_ALL_BELOW = 4096


def heap(value: Callable, p: np.ndarray, total_budget: int, lo: int, hi: int) -> np.ndarray:
    """Algorithm 1 of CoBA-RL, unit by unit with a max-heap: O(R log M).

    Returns ``[M]`` counts; stops early only if every prompt reaches ``hi``.
    """
    counts = np.full(p.shape[0], lo, dtype=np.int64)
    remaining = total_budget - lo * p.shape[0]
    bound = bind(value, p)
    first = bound.gain(counts)
    # heapq is a min-heap: store -gain; the index breaks ties toward the lower prompt.
    entries = [(-g, i) for i, g in enumerate(first.tolist())] if lo < hi else []
    heapq.heapify(entries)
    one = np.empty(1, dtype=np.int64)
    while remaining > 0 and entries:
        _, i = heapq.heappop(entries)
        counts[i] += 1
        remaining -= 1
        if counts[i] < hi:
            one[0] = counts[i]
            heapq.heappush(entries, (-float(bound.gain(one, slice(i, i + 1))[0]), i))
    return counts


def _count_above(bound, m: int, t: float, lo: int, hi: int, exact: bool = True) -> np.ndarray:
    """``[M]`` number of gains ``gain(b), lo <= b < hi``, strictly above ``t``.

    Rows are non-increasing (concave value), so the count is a position: a closed-form guess
    (``exact=False`` stops there: it can be off by one where a gain is within rounding of ``t``),
    corrected against the actual gains; without a closed form, a vectorised binary search over b.
    """
    width = hi - lo
    approx = getattr(bound, "approx_count_above", None)
    if approx is not None:
        c = approx(t, lo, hi)
        while exact:
            down = (c > 0) & (bound.gain(lo + c - 1) <= t)
            up = (c < width) & (bound.gain(lo + np.minimum(c, width - 1)) > t)
            if not (down.any() or up.any()):
                break
            c = c - down + up
        return c
    left = np.zeros(m, dtype=np.int64)  # gains at b < lo + left are seen > t
    right = np.full(m, width, dtype=np.int64)
    while np.any(left < right):
        mid = (left + right) // 2
        above = bound.gain(lo + np.minimum(mid, width - 1)) > t
        open_ = left < right
        left = np.where(open_ & above, mid + 1, left)
        right = np.where(open_ & ~above, mid, right)
    return left


def threshold(value: Callable, p: np.ndarray, total_budget: int, lo: int, hi: int) -> tuple[np.ndarray, dict]:
    """Exact greedy result in O(M log(range)) without a heap (needs a concave value).

    Finds thresholds ``t_hi > t_lo`` with ``n(t_hi) <= R <= n(t_lo)``, where ``n(t)`` counts
    gains above ``t``, by bisection in log space; everything above ``t_hi`` is taken, and the
    few entries in between are ranked exactly as the heap would pop them: larger gain first,
    then lower prompt index, then lower budget. The bisection steers with the closed-form counts
    and checks the final bracket against the actual gains (re-running exactly if rounding moved it).
    """
    if not is_concave(value):
        raise ValueError("method='threshold' needs a concave value (value.concave = True); use method='heap' or 'dp'")
    m = p.shape[0]
    width = hi - lo
    remaining = total_budget - lo * m
    if remaining == 0 or width == 0:
        return np.full(m, lo, dtype=np.int64), {"iterations": 0}
    if remaining == m * width:
        return np.full(m, hi, dtype=np.int64), {"iterations": 0}
    bound = bind(value, p)
    if m * width <= SORT_ALL_BELOW:
        # Small problems (a trainer step's batch): sorting the whole gain table is cheaper than bisecting.
        return _take_band(bound, m, lo, remaining, np.zeros(m, dtype=np.int64), np.full(m, width, dtype=np.int64), 0)
    g_first = bound.gain(np.full(m, lo))
    g_last = bound.gain(np.full(m, hi - 1))
    # n(t_hi) = 0 <= R. For t_lo, first try just below the smallest end-of-row gain (usually the
    # smallest gain overall, so the bracket is tight); else the smallest positive float.
    top = float(np.log(g_first.max())) if g_first.max() > 0 else 0.0
    floor = float(np.log(np.nextafter(0.0, 1.0)))
    positive = g_last[g_last > 0]
    bottom = float(np.log(positive.min())) - 1.0 if positive.size == m else floor
    c_bottom = _count_above(bound, m, float(np.exp(bottom)), lo, hi)
    if c_bottom.sum() < remaining and bottom > floor:
        bottom = floor
        c_bottom = _count_above(bound, m, float(np.exp(bottom)), lo, hi)
    if c_bottom.sum() < remaining:
        # Fewer positive gains than units (e.g. Knapsack prompts at p in {0, 1}): take all of them;
        # the rest are ties at gain <= 0, ranked below in heap order.
        return _take_band(bound, m, lo, remaining, c_bottom, np.full(m, width, dtype=np.int64), 0)
    iterations = 0
    for exact in (False, True):
        log_lo, c_lo, log_hi, c_hi = bottom, c_bottom, top, np.zeros(m, dtype=np.int64)
        # Stop once the band between the thresholds is small enough to sort, or cannot shrink (ties).
        n_lo, n_hi = int(c_lo.sum()), 0
        while n_lo - n_hi > max(64, m // 4) and iterations < 400:
            mid = 0.5 * (log_lo + log_hi)
            if not log_lo < mid < log_hi:
                break
            iterations += 1
            c_mid = _count_above(bound, m, float(np.exp(mid)), lo, hi, exact)
            n_mid = int(c_mid.sum())
            if n_mid > remaining:
                log_lo, c_lo, n_lo = mid, c_mid, n_mid
            else:
                log_hi, c_hi, n_hi = mid, c_mid, n_mid
        if not exact:
            c_lo = _count_above(bound, m, float(np.exp(log_lo)), lo, hi)
            c_hi = _count_above(bound, m, float(np.exp(log_hi)), lo, hi) if log_hi < top else c_hi
        if c_hi.sum() <= remaining <= c_lo.sum():
            return _take_band(bound, m, lo, remaining, c_hi, c_lo, iterations)
    raise AssertionError("unreachable: the exact bisection keeps a valid bracket")


def _take_band(bound, m: int, lo: int, remaining: int, c_hi: np.ndarray, c_lo: np.ndarray, iterations: int):
    """Take every gain above the band, then the best of the band in heap order."""
    # Band: row i contributes budgets lo + c_hi[i] .. lo + c_lo[i] - 1.
    extra = c_lo - c_hi
    rows = np.repeat(np.arange(m), extra)
    offsets = np.arange(rows.size) - np.repeat(np.cumsum(extra) - extra, extra)
    b = lo + c_hi[rows] + offsets
    g = bound.gain(b, rows)
    take = remaining - int(c_hi.sum())
    order = np.lexsort((b, rows, -g))[:take]
    counts = lo + c_hi + np.bincount(rows[order], minlength=m)
    return counts, {"iterations": iterations, "band": int(rows.size)}
