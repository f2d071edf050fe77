"""GVM (arXiv 2505.02391) budgets: n_i proportional to G_i / sqrt(p_i + alpha / p_i^(beta - 1)).

Pure functions, written from the rule of ``RLHFlow/GVM`` ``em/stage_2_calc_sample_size.py``
(``calc_sample_ratio`` and ``float_to_int_preserve_sum``, commit d640a75) and checked against
vectors that code produced (``tests/data/parity_gvm.json``). The weight minimises the variance of
the gradient estimate: with per-prompt variance ``c_i / n_i`` and ``c_i = G_i^2 / (p_i + alpha /
p_i^(beta-1))``, ``sum_i c_i / n_i`` under ``sum_i n_i = N`` is smallest at ``n_i ~ sqrt(c_i)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cobarl.value import VALUES


def gvm_weights(pass_rates: np.ndarray, grad_norms: np.ndarray | None = None, *, alpha: float = 1e-3,
                beta: float = 2.0) -> np.ndarray:
    """``w_i = G_i / sqrt(p_i + alpha / p_i^(beta-1))``, 0 where ``p_i = 0`` or ``G_i = 0``.
    ``grad_norms=None`` is the p-only mode (every ``G_i = 1``)."""
    p = np.asarray(pass_rates, dtype=np.float64)
    g = np.ones_like(p) if grad_norms is None else np.asarray(grad_norms, dtype=np.float64)
    w = np.zeros_like(p)
    ok = (p > 0) & (g > 0)
    w[ok] = g[ok] / np.sqrt(p[ok] + alpha / p[ok] ** (beta - 1))
    return w


def gvm_ratios(weights: np.ndarray, pass_rates: np.ndarray | None = None, *, filter_threshold: float = 0.0,
               filter_insufficient: float = 0.0, total: int = 0) -> np.ndarray:
    """Weights normalised to sum 1, with the public code's optional filters: ``filter_threshold > 0``
    keeps prompts with ``p <= filter_threshold``; ``filter_insufficient > 0`` keeps prompts with
    ``p * ratio * total >= filter_insufficient`` (ratio after the first filter, before renormalising).
    Raises where the public code divides by zero (every weight 0)."""
    w = np.asarray(weights, dtype=np.float64)
    if not (w > 0).any():
        raise ValueError("every GVM weight is 0 (each prompt has p = 0 or G = 0): there is nothing to split by")
    ratio = w / w.sum()
    p = None if pass_rates is None else np.asarray(pass_rates, dtype=np.float64)
    if filter_threshold > 0:
        ratio = np.where(p <= filter_threshold, ratio, 0.0)
    if filter_insufficient > 0:
        ratio = np.where(p * ratio * total >= filter_insufficient, ratio, 0.0)
    if not (ratio > 0).any():
        raise ValueError("the GVM filters removed every prompt")
    return ratio / ratio.sum()


def round_preserving_sum(values: np.ndarray, total: int) -> np.ndarray:
    """The public ``float_to_int_preserve_sum``: round half to even, then add 1 to the largest residuals
    (or take 1 from the smallest) until the sum is ``total``; ties by index (the public sort is unstable)."""
    x = np.asarray(values, dtype=np.float64)
    out = np.round(x)
    err = int(total - out.sum())
    if err:
        resid = x - out
        idx = np.argsort(-resid if err > 0 else resid, kind="stable")[: abs(err)]
        out[idx] += np.sign(err)
    return out.astype(np.int64)


def gvm_counts(pass_rates: np.ndarray, total_budget: int, *, min_budget: int, max_budget: int, alpha: float = 1e-3,
               beta: float = 2.0, grad_norms: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """cobarl's online GVM: every prompt gets ``min_budget`` (GVM's stage-1 exploration, which is also
    what keeps a prompt at p = 0 from never being sampled again), and the rest is split by the
    public ratio and rounding; a prompt above ``max_budget`` is capped and its surplus split again
    over the others by the same rule. All-zero weights (every prompt at p = 0) split it uniformly.
    """
    p = np.asarray(pass_rates, dtype=np.float64)
    m = p.size
    counts = np.full(m, min_budget, dtype=np.int64)
    left = int(total_budget - m * min_budget)
    w = gvm_weights(p, grad_norms, alpha=alpha, beta=beta)
    fallback = not (w > 0).any()
    if fallback:
        w = np.ones(m)
    room = np.full(m, max_budget - min_budget, dtype=np.int64)
    while left > 0:
        open_ = (room > 0) & (w > 0)
        if not open_.any():  # every weighted prompt is full: the rest goes to the others, evenly
            open_, w = room > 0, np.ones(m)
        add = np.minimum(round_preserving_sum(gvm_ratios(np.where(open_, w, 0.0)) * left, left), room)
        counts += add
        room -= add
        left -= int(add.sum())
    return counts, {"uniform_fallback": fallback}


@VALUES.register("gvm")
@dataclass(frozen=True)
class GvmValue:
    """GVM's objective as a value: ``V(n, p) = -c(p) / n`` with ``c = w^2`` (minus the gradient
    variance), concave in n. cobarl reports it as the plan's objective; the ``gvm`` method allocates
    with the public ratio-and-round rule (:func:`gvm_counts`), not by maximising it."""

    alpha: float = 1e-3
    beta: float = 2.0
    concave = True

    @classmethod
    def for_allocator(cls, config, params: tuple[float, float]) -> GvmValue:
        """GVM's own alpha and beta (the options ``weight_alpha``, ``weight_beta``), not the capability's."""
        return cls(alpha=config.weight_alpha, beta=config.weight_beta)

    def __call__(self, budgets: np.ndarray, pass_rates: np.ndarray) -> np.ndarray:
        c = gvm_weights(pass_rates, alpha=self.alpha, beta=self.beta) ** 2
        n = np.asarray(budgets, dtype=np.float64)
        return np.where(n > 0, -c / np.maximum(n, 1), 0.0)
