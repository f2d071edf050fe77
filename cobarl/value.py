"""Value of giving a prompt B rollouts, and its marginal gains.

Stage 3 of the data flow. A value function is any object callable as ``value(budgets, pass_rates)``
(both ``[M]`` arrays) returning ``[M]`` values; allocators maximise the sum. Objects may also offer

* ``gain(budgets, pass_rates)``: ``V(B + 1) - V(B)`` in closed form (avoids the cancellation of
  subtracting two nearly saturated values);
* ``concave = True``: gains never increase with B, which makes greedy allocation optimal and lets
  the fast threshold solver be exact;
* ``bind(pass_rates)``: precomputed per-prompt constants for one batch, an object with
  ``gain(budgets, rows)`` and optionally ``approx_count_above(threshold, lo, hi)`` (roughly how
  many gains ``gain(b), lo <= b < hi`` exceed ``threshold``; the solver makes it exact).

A plain callable works too (see :func:`as_value`): its gains are differences and it is not assumed
concave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import betaln

from cobarl.registry import Registry

VALUES: Registry[type] = Registry("value function")


def _gain_by_difference(value: Callable, budgets: np.ndarray, pass_rates: np.ndarray) -> np.ndarray:
    return value(budgets + 1, pass_rates) - value(budgets, pass_rates)


def gain(value: Callable, budgets: np.ndarray, pass_rates: np.ndarray) -> np.ndarray:
    """``V(B + 1, p) - V(B, p)``, in closed form when the value object offers it."""
    fn = getattr(value, "gain", None)
    return fn(budgets, pass_rates) if fn is not None else _gain_by_difference(value, budgets, pass_rates)


@dataclass(frozen=True)
class _Bound:
    """Gains of any value for one batch of pass rates (see ``bind``)."""

    fn: Callable
    pass_rates: np.ndarray

    def gain(self, budgets: np.ndarray, rows=slice(None)) -> np.ndarray:
        return gain(self.fn, budgets, self.pass_rates[rows])


def bind(value: Callable, pass_rates: np.ndarray):
    """An object with ``gain(budgets, rows=slice(None))`` for this batch; values may precompute."""
    fn = getattr(value, "bind", None)
    return fn(pass_rates) if fn is not None else _Bound(value, pass_rates)


def is_concave(value: Callable) -> bool:
    return bool(getattr(value, "concave", False))


@VALUES.register("coba")
@dataclass(frozen=True)
class CobaValue:
    """CoBA-RL value (arXiv 2602.03048, Eq. 9).

    ``V(B, p) = (1 - exp(-B * p * (1 - p) / tau)) * BetaPDF(p; alpha, beta)``

    The first factor (budget saturation, Eq. 8) says more rollouts on one prompt help less and
    less; the Beta density (Eq. 5) says which pass rates the current capability favours.
    Marginal gains ``C * exp(-k B) * (1 - exp(-k))`` with ``k = p(1-p)/tau`` form a decreasing
    geometric sequence, so V is concave in B (Prop. 2.2).

    Args:
        alpha, beta: Beta preference parameters (from :class:`cobarl.CapabilityTracker`).
        tau: saturation temperature, or ``"adaptive"`` for the public code's rule
            ``tau = tau_min + (tau_max - tau_min) * clip(Var(p) / var_max, 0, 1)``, where Var is
            taken over the pass rates of the call (the prompts being allocated together).
        tau_min, tau_max, var_max: constants of the adaptive rule (public code: 3, 12, 0.1667).
        eps: pass rates are clipped to ``[eps, 1 - eps]`` (public code: 0.01), so prompts at 0 or 1
            keep a small positive gain instead of a degenerate ``k = 0``.

    >>> v = CobaValue(alpha=7.26, beta=3.74, tau=8.0)
    >>> v(np.array([2, 16]), np.array([0.7, 0.7])).round(4)
    array([0.1428, 0.9572])
    """

    alpha: float = 9.0
    beta: float = 2.0
    tau: float | str = 8.0
    tau_min: float = 3.0
    tau_max: float = 12.0
    var_max: float = 0.1667
    eps: float = 0.01

    concave = True

    @classmethod
    def for_allocator(cls, config, params: tuple[float, float]) -> CobaValue:
        """The value an `Allocator` plans with: its capability's (alpha, beta) and its tau."""
        return cls(alpha=params[0], beta=params[1], tau=config.tau)

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0):
            raise ValueError(f"alpha and beta must be > 0, got alpha={self.alpha}, beta={self.beta}")
        if self.tau != "adaptive" and not (isinstance(self.tau, (int, float)) and self.tau > 0):
            raise ValueError(f"tau must be a positive number or 'adaptive', got {self.tau!r}")
        if not 0 < self.eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {self.eps}")

    def resolve_tau(self, pass_rates: np.ndarray) -> float:
        if self.tau != "adaptive":
            return float(self.tau)
        share = np.clip(np.var(np.clip(pass_rates, self.eps, 1 - self.eps)) / self.var_max, 0.0, 1.0)
        return float(self.tau_min + (self.tau_max - self.tau_min) * share)

    def bind(self, pass_rates: np.ndarray) -> "_BoundCoba":
        """Per-prompt constants for a batch, so solvers evaluate gains without recomputing them."""
        p = np.clip(np.asarray(pass_rates, dtype=np.float64), self.eps, 1 - self.eps)
        log_c = (self.alpha - 1) * np.log(p) + (self.beta - 1) * np.log1p(-p) - betaln(self.alpha, self.beta)
        k = p * (1 - p) / self.resolve_tau(pass_rates)
        return _BoundCoba(log_c, k, -np.expm1(-k))

    def __call__(self, budgets: np.ndarray, pass_rates: np.ndarray) -> np.ndarray:
        return self.bind(pass_rates).value(budgets)

    def gain(self, budgets: np.ndarray, pass_rates: np.ndarray) -> np.ndarray:
        return self.bind(pass_rates).gain(budgets)


@dataclass(frozen=True)
class _BoundCoba:
    """CoBA value of one batch: ``V = C (1 - e^(-k B))``, gains ``C e^(-k B) (1 - e^(-k))``.

    ``rows`` selects prompts (an index array or slice) so the heap can evaluate one at a time.
    """

    log_c: np.ndarray
    k: np.ndarray
    first_gain_factor: np.ndarray  # 1 - e^(-k)

    def value(self, budgets: np.ndarray, rows=slice(None)) -> np.ndarray:
        return -np.expm1(-self.k[rows] * budgets) * np.exp(self.log_c[rows])

    def gain(self, budgets: np.ndarray, rows=slice(None)) -> np.ndarray:
        return np.exp(self.log_c[rows] - self.k[rows] * budgets) * self.first_gain_factor[rows]

    def approx_count_above(self, threshold: float, lo: int, hi: int) -> np.ndarray:
        # gain(b) > t  <=>  b < (log C + log(1 - e^-k) - log t) / k, so the count is a ceil.
        t = np.subtract(self._log_first_gain, np.log(threshold))
        np.multiply(t, self._inv_k, out=t)
        np.ceil(t, out=t)
        np.subtract(t, lo, out=t)
        # Raw ufuncs, not np.clip: this runs ~10 times per allocation and the wrapper dominates.
        np.maximum(t, 0, out=t)
        np.minimum(t, hi - lo, out=t)
        return t.astype(np.int64)

    @cached_property
    def _log_first_gain(self) -> np.ndarray:
        return self.log_c + np.log(self.first_gain_factor)

    @cached_property
    def _inv_k(self) -> np.ndarray:
        return 1.0 / self.k


@VALUES.register("knapsack")
@dataclass(frozen=True)
class KnapsackValue:
    """Knapsack-RL value (arXiv 2509.25849): P(non-zero gradient) x information gain.

    ``V(N, p) = (1 - p^N - (1 - p)^N) * p * (1 - p)^2``. Gains
    ``(p^N (1-p) + (1-p)^N p) * p (1-p)^2`` shrink with N, so V is concave; prompts at p in {0, 1}
    are worth 0 whatever they get.

    >>> KnapsackValue()(np.array([2, 8]), np.array([0.5, 0.5])).round(4)
    array([0.0625, 0.124 ])
    """

    concave = True

    @classmethod
    def for_allocator(cls, config, params: tuple[float, float]) -> KnapsackValue:
        """No parameters: Knapsack-RL's value ignores the capability."""
        return cls()

    def __call__(self, budgets: np.ndarray, pass_rates: np.ndarray) -> np.ndarray:
        p = np.asarray(pass_rates, dtype=np.float64)
        n = np.asarray(budgets, dtype=np.float64)
        return (1 - p**n - (1 - p) ** n) * p * (1 - p) ** 2

    def gain(self, budgets: np.ndarray, pass_rates: np.ndarray) -> np.ndarray:
        p = np.asarray(pass_rates, dtype=np.float64)
        n = np.asarray(budgets, dtype=np.float64)
        return (p**n * (1 - p) + (1 - p) ** n * p) * p * (1 - p) ** 2


@dataclass(frozen=True)
class CallableValue:
    """Adapter for a plain ``f(budgets, pass_rates) -> values``; gains by difference."""

    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    concave: bool = False

    def __call__(self, budgets: np.ndarray, pass_rates: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(budgets, pass_rates), dtype=np.float64)


def as_value(value: object | str | None, **kwargs) -> Callable:
    """A value object from a registered name, an instance, or a plain callable (default: CoBA)."""
    if value is None:
        return CobaValue(**kwargs)
    if isinstance(value, str):
        return VALUES.get(value)(**kwargs)
    if isinstance(value, type):
        return value(**kwargs)
    if not callable(value):
        raise TypeError(f"value must be a name ({', '.join(VALUES.names())}), a value object or a callable; got {value!r}")
    return value if hasattr(value, "gain") or hasattr(value, "concave") else CallableValue(value)
