"""Exact dynamic programming over (prompt, budget used): the verification reference.

``best[i][r]`` = best total value of prompts ``0..i`` using ``r`` units above their minimum.
O(M * R * (hi - lo)) time, vectorised over r; O(M * R) memory for the backtracking choices.
Works for any value, concave or not.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def dp(value: Callable, p: np.ndarray, budget: int, lo: int, hi: int) -> np.ndarray:
    m = p.shape[0]
    width = hi - lo
    remaining = budget - lo * m
    ks = np.arange(width + 1)
    # table[i, k] = V(lo + k, p_i), one vectorised call.
    table = np.asarray(value(np.broadcast_to(lo + ks, (m, width + 1)).ravel(), np.repeat(p, width + 1)), dtype=np.float64)
    table = table.reshape(m, width + 1)
    best = np.full(remaining + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((m, remaining + 1), dtype=np.int16 if width < 2**15 else np.int32)
    for i in range(m):
        new = np.full(remaining + 1, -np.inf)
        pick = np.zeros(remaining + 1, dtype=choice.dtype)
        for k in range(min(width, remaining) + 1):
            cand = best[: remaining + 1 - k] + table[i, k]
            better = cand > new[k:]
            new[k:][better] = cand[better]
            pick[k:][better] = k
        best = new
        choice[i] = pick
    counts = np.empty(m, dtype=np.int64)
    r = remaining
    for i in range(m - 1, -1, -1):
        k = int(choice[i, r])
        counts[i] = lo + k
        r -= k
    return counts
