"""The numbers of ``cobarl diagnose``, as pure functions: pass-rate buckets, the shares of prompts
at 0/k, in between and k/k, and binomial confidence intervals for a share of prompts.

A prompt's *successes* are how many of its first ``k`` samples succeeded (``0..k``). The share that is
*reachable* among the 0/k prompts (some sample within the sampling budget succeeds) and the share that
is *unsolved* among the k/k prompts (some sample fails) are binomial shares over the prompts
resampled: their intervals treat those prompts as a random sample of prompts like them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

INTERVALS = ("clopper-pearson", "wilson")
"""Binomial interval methods; the first is the default."""


def pass_rate_buckets(k: int) -> list[tuple[int, int]]:
    """Inclusive ``(lo, hi)`` ranges of successes out of ``k`` that split ``0..k`` into: none (0/k), a
    low band (1 to about k/4), the middle, a high band (about 3k/4 to k-1) and all (k/k). Bands that
    would be empty at small ``k`` are left out, so every count falls in exactly one bucket.

    >>> pass_rate_buckets(16)
    [(0, 0), (1, 4), (5, 11), (12, 15), (16, 16)]
    >>> pass_rate_buckets(8), pass_rate_buckets(3), pass_rate_buckets(2)
    ([(0, 0), (1, 2), (3, 5), (6, 7), (8, 8)], [(0, 0), (1, 1), (2, 2), (3, 3)], [(0, 0), (1, 1), (2, 2)])
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k == 1:
        return [(0, 0), (1, 1)]
    band = max(1, k // 4)
    low, high_start = (1, min(band, k - 1)), max(k - band, band + 1)
    middle, high = (low[1] + 1, high_start - 1), (high_start, k - 1)
    return [(0, 0)] + [(lo, hi) for lo, hi in (low, middle, high) if lo <= hi] + [(k, k)]


def bucket_label(lo: int, hi: int, k: int) -> str:
    """``"0/16"``, ``"1-4/16"``, ``"16/16"``.

    >>> bucket_label(1, 4, 16), bucket_label(16, 16, 16)
    ('1-4/16', '16/16')
    """
    return f"{lo}/{k}" if lo == hi else f"{lo}-{hi}/{k}"


def checked_successes(successes: Sequence[int], k: int) -> np.ndarray:
    """``successes`` as an int array, every value in ``0..k`` (ValueError naming the first that is not)."""
    s = np.asarray(successes)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"successes must be a non-empty list of per-prompt counts, got shape {s.shape}")
    bad = np.flatnonzero((s < 0) | (s > k) | (s != np.round(s)))
    if bad.size:
        raise ValueError(f"successes[{int(bad[0])}] = {s[bad[0]]} is not a count in 0..{k}")
    return s.astype(np.int64)


def histogram(successes: Sequence[int], k: int) -> list[dict[str, Any]]:
    """Prompts (and their share) per bucket of `pass_rate_buckets`.

    >>> [(h["bucket"], h["prompts"]) for h in histogram([0, 0, 3, 16], 16)]
    [('0/16', 2), ('1-4/16', 1), ('5-11/16', 0), ('12-15/16', 0), ('16/16', 1)]
    """
    s = checked_successes(successes, k)
    return [{"bucket": bucket_label(lo, hi, k), "lo": lo, "hi": hi, "prompts": int(((s >= lo) & (s <= hi)).sum()),
             "share": float(((s >= lo) & (s <= hi)).mean())} for lo, hi in pass_rate_buckets(k)]


def shares(successes: Sequence[int], k: int) -> dict[str, float]:
    """Share of prompts with no success (``share_zero``), some (``share_mixed``) and all (``share_solved``).

    >>> shares([0, 0, 3, 16], 16)
    {'share_zero': 0.5, 'share_mixed': 0.25, 'share_solved': 0.25}
    """
    s = checked_successes(successes, k)
    return {"share_zero": float((s == 0).mean()), "share_mixed": float(((s > 0) & (s < k)).mean()),
            "share_solved": float((s == k).mean())}


def _check_counts(hits: int, n: int, level: float) -> None:
    if not (isinstance(n, (int, np.integer)) and isinstance(hits, (int, np.integer)) and 0 <= hits <= n):
        raise ValueError(f"need integer counts with 0 <= hits <= n, got hits={hits!r}, n={n!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def clopper_pearson(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson ("exact") interval of a binomial share: the Beta quantiles whose tails hold
    ``(1 - level) / 2`` each. At least ``level`` coverage for every true share, so it is conservative;
    chosen as the default because the shares here are often near 0 or 1 from few prompts, where the
    normal approximation behind other intervals is weakest. ``(0, 1)`` for ``n == 0``.

    >>> [round(x, 4) for x in clopper_pearson(0, 10)], [round(x, 4) for x in clopper_pearson(5, 10)]
    ([0.0, 0.3085], [0.1871, 0.8129])
    """
    _check_counts(hits, n, level)
    tail = (1 - level) / 2
    lo = 0.0 if hits == 0 else float(stats.beta.ppf(tail, hits, n - hits + 1))
    hi = 1.0 if hits == n else float(stats.beta.ppf(1 - tail, hits + 1, n - hits))
    return lo, hi


def wilson(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial share (closer to ``level`` coverage on average than
    Clopper-Pearson, sometimes below it). ``(0, 1)`` for ``n == 0``.

    >>> [round(x, 4) for x in wilson(0, 10)], [round(x, 4) for x in wilson(5, 10)]
    ([0.0, 0.2775], [0.2366, 0.7634])
    """
    _check_counts(hits, n, level)
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def share_interval(hits: int, n: int, method: str = INTERVALS[0], level: float = 0.95) -> dict[str, Any]:
    """``{"share", "ci", "hits", "of"}`` of ``hits`` among ``n`` prompts; share and interval None when ``n == 0``
    (no prompt to measure, not a share of 0).

    >>> share_interval(3, 4, "wilson")["share"], share_interval(0, 0)["ci"]
    (0.75, None)
    """
    if method not in INTERVALS:
        raise ValueError(f"unknown interval {method!r}; valid: {', '.join(INTERVALS)}")
    _check_counts(hits, n, level)
    if n == 0:
        return {"share": None, "ci": None, "hits": 0, "of": 0}
    lo, hi = (clopper_pearson if method == "clopper-pearson" else wilson)(hits, n, level)
    return {"share": hits / n, "ci": [lo, hi], "hits": int(hits), "of": int(n)}
