"""Per-prompt rollout budgets: ``allocate(pass_rates, total_budget, ...) -> Allocation``.

Stage 4 of the data flow. Solves

    maximise  sum_i V(B_i, p_i)   s.t.  sum_i B_i = total_budget,  min_budget <= B_i <= max_budget

(CoBA-RL Eq. 3) with one of several methods, shaped like ``scipy.optimize`` solvers: data
positional, options keyword-only, a result object with the counts and diagnostics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cobarl import metrics as M
from cobarl.allocation import baselines, greedy
from cobarl.allocation.dp import dp
from cobarl.allocation.gvm import GvmValue, gvm_counts
from cobarl.registry import Registry
from cobarl.value import KnapsackValue, as_value, is_concave

SOLVERS: Registry[Callable[["Problem"], tuple[np.ndarray, dict]]] = Registry("allocation method")


@dataclass(frozen=True)
class Problem:
    """One validated allocation problem, as every solver receives it."""

    value: Callable
    pass_rates: np.ndarray
    total: int
    lo: int
    hi: int
    seen: np.ndarray
    nominal: int | None


@SOLVERS.register("threshold")
def _threshold(q: Problem) -> tuple[np.ndarray, dict]:
    return greedy.threshold(q.value, q.pass_rates, q.total, q.lo, q.hi)


@SOLVERS.register("heap")
def _heap(q: Problem) -> tuple[np.ndarray, dict]:
    return greedy.heap(q.value, q.pass_rates, q.total, q.lo, q.hi), {}


@SOLVERS.register("dp")
def _dp(q: Problem) -> tuple[np.ndarray, dict]:
    return dp(q.value, q.pass_rates, q.total, q.lo, q.hi), {}


@SOLVERS.register("uniform")
def _uniform(q: Problem) -> tuple[np.ndarray, dict]:
    return baselines.uniform(q.pass_rates.size, q.total), {}


@SOLVERS.register("knapsack-rl")
def _knapsack_rl(q: Problem) -> tuple[np.ndarray, dict]:
    nominal = q.total // q.pass_rates.size if q.nominal is None else q.nominal
    if not (_is_integer(nominal) and q.lo <= nominal <= q.hi):
        raise ValueError(f"nominal_budget must be an integer in [min_budget, max_budget] = [{q.lo}, {q.hi}], got {nominal!r}")
    return baselines.knapsack_rl(q.pass_rates, q.total, q.lo, q.hi, q.seen, int(nominal))


@SOLVERS.register("coba-reference")
def _coba_reference(q: Problem) -> tuple[np.ndarray, dict]:
    return baselines.coba_reference(q.value, q.pass_rates, q.total, q.lo, q.hi, q.seen)


@SOLVERS.register("gvm")
def _gvm(q: Problem) -> tuple[np.ndarray, dict]:
    v = q.value if isinstance(q.value, GvmValue) else GvmValue()
    return gvm_counts(q.pass_rates, q.total, min_budget=q.lo, max_budget=q.hi, alpha=v.alpha, beta=v.beta)


METHODS = ("auto", *SOLVERS.names())


@dataclass(frozen=True)
class Allocation:
    """Result of :func:`allocate`.

    Attributes:
        counts: ``[M]`` int64 rollouts per prompt; sums to the total budget.
        objective: ``sum(value(counts, pass_rates))`` for the value used.
        method: the method that produced the counts (``"auto"`` resolved).
        diagnostics: solver details (iterations, wall time, categories of the reference paths);
            `Allocator.plan` adds the `pass_rates` and `seen` arrays the plan was made from.
    """

    counts: np.ndarray
    objective: float
    method: str
    diagnostics: dict = field(default_factory=dict)


def _is_integer(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def budget_problem(num_prompts: int, total_budget: int, min_budget: int, max_budget: int) -> str | None:
    """Why ``total_budget`` rollouts cannot be split over ``num_prompts`` prompts within
    ``[min_budget, max_budget]`` each, or None if they can. The one feasibility check every caller
    (allocate, the trainers' configs, the verl plugin) uses, so their messages agree.

    >>> budget_problem(16, 20, 2, 32)
    'total_budget=20 is below 16 prompts x min_budget=2 = 32; raise the budget or allocate fewer prompts'
    """
    if total_budget < num_prompts * min_budget:
        return (
            f"total_budget={total_budget} is below {num_prompts} prompts x min_budget={min_budget} = "
            f"{num_prompts * min_budget}; raise the budget or allocate fewer prompts"
        )
    if total_budget > num_prompts * max_budget:
        return (
            f"total_budget={total_budget} is above {num_prompts} prompts x max_budget={max_budget} = "
            f"{num_prompts * max_budget}; lower the budget, raise max_budget or allocate more prompts"
        )
    return None


def _validate(pass_rates, total_budget, min_budget, max_budget, method, seen) -> tuple[np.ndarray, np.ndarray]:
    """Check every input before any work; errors name the offending value and the fix."""
    if not (isinstance(method, str) and method in METHODS) and not callable(method):
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)} (or a callable)")
    for name, x in (("total_budget", total_budget), ("min_budget", min_budget), ("max_budget", max_budget)):
        if not _is_integer(x):
            raise TypeError(f"{name} must be an integer, got {x!r} ({type(x).__name__})")
        if x < 0:
            raise ValueError(f"{name} must be >= 0, got {x}")
    if min_budget < 1:
        raise ValueError("min_budget must be >= 1 (2 or more keeps every group able to give a gradient)")
    if min_budget > max_budget:
        raise ValueError(f"min_budget ({min_budget}) is larger than max_budget ({max_budget})")
    try:
        p = np.asarray(pass_rates, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"pass_rates must be a 1-D array of numbers: {err}") from None
    if p.ndim != 1:
        raise ValueError(f"pass_rates must be 1-D, got shape {p.shape}")
    if p.size == 0:
        raise ValueError("pass_rates is empty: there are no prompts to allocate to")
    bad = np.flatnonzero(~(np.isfinite(p) & (p >= 0) & (p <= 1)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"pass_rates[{i}] = {p[i]} is not a probability in [0, 1] ({bad.size} bad value(s))")
    m = p.size
    problem = budget_problem(m, total_budget, min_budget, max_budget)
    if problem:
        raise ValueError(problem)
    mask = np.ones(m, dtype=bool) if seen is None else np.asarray(seen)
    if mask.shape != (m,) or mask.dtype != bool:
        raise ValueError(f"seen must be a bool array of shape ({m},), got {mask.dtype} {mask.shape}")
    return p, mask


def allocate(
    pass_rates: Sequence[float] | np.ndarray,
    total_budget: int,
    *,
    min_budget: int = 2,
    max_budget: int = 128,
    value: object | str | None = None,
    method: str | Callable = "auto",
    seen: np.ndarray | None = None,
    nominal_budget: int | None = None,
) -> Allocation:
    """Split ``total_budget`` rollouts over prompts by their estimated pass rates.

    Args:
        pass_rates: ``[M]`` estimated success probability of each prompt, in [0, 1].
        total_budget: rollouts to hand out in all; ``M * min_budget <= total_budget <= M * max_budget``.
        min_budget, max_budget: per-prompt bounds (paper: 2 and 128). ``min_budget >= 2`` means no
            group of one, whose GRPO advantage would be meaningless.
        value: value function: a name (``"coba"``, ``"knapsack"``), a value object (e.g.
            :class:`cobarl.CobaValue`) or a callable ``f(budgets, pass_rates)``. Default: CoBA
            with alpha = 9, beta = 2, tau = 8 (Knapsack for ``method="knapsack-rl"``).
        method:
            * ``"auto"`` (default): ``"threshold"`` for concave values, else ``"heap"``;
            * ``"threshold"``: exact greedy optimum via a bisection on the marginal gain;
            * ``"heap"``: CoBA-RL Algorithm 1, unit by unit with a max-heap (the reference);
            * ``"dp"``: exact dynamic programming (any value; slow, for verification);
            * ``"uniform"``: plain GRPO;
            * ``"knapsack-rl"`` / ``"coba-reference"``: the public code paths of the two papers;
            * a callable ``f(pass_rates, total_budget, min_budget, max_budget) -> counts``.
        seen: ``[M]`` bool, False for prompts never seen (only the reference paths treat them
            differently: the nominal budget for Knapsack-RL, p = 0.5 for CoBA-RL).
        nominal_budget: the per-prompt budget ``n`` of plain GRPO, which ``"knapsack-rl"`` gives
            unseen prompts (default ``total_budget // M``; the public code's ``rollout.n``).

    Ties are broken toward the lower prompt index, so the same input gives the same output.

    >>> res = allocate([0.1, 0.5, 0.9], 12, min_budget=2, max_budget=8, value=KnapsackValue())
    >>> res.counts, int(res.counts.sum())
    (array([5, 5, 2]), 12)
    """
    p, mask = _validate(pass_rates, total_budget, min_budget, max_budget, method, seen)
    v = as_value(value) if value is not None or method != "knapsack-rl" else KnapsackValue()
    lo, hi, m = int(min_budget), int(max_budget), p.size
    name = method if isinstance(method, str) else getattr(method, "__name__", "callable")
    if method == "auto":
        name = "threshold" if is_concave(v) else "heap"
    start = time.perf_counter()
    if callable(method):
        counts, diagnostics = np.asarray(method(p, int(total_budget), lo, hi)), {}
        if counts.shape != (m,) or not np.issubdtype(counts.dtype, np.integer):
            raise ValueError(f"allocation callable returned {counts.dtype} {counts.shape}; expected integers of shape ({m},)")
    else:
        counts, diagnostics = SOLVERS.get(name)(Problem(v, p, int(total_budget), lo, hi, mask, nominal_budget))
    diagnostics["seconds"] = time.perf_counter() - start
    counts = counts.astype(np.int64, copy=False)
    if counts.sum() != total_budget or counts.min() < lo or counts.max() > hi:
        raise RuntimeError(
            f"method {name!r} broke the budget contract: sum={counts.sum()} (want {total_budget}), "
            f"range [{counts.min()}, {counts.max()}] (want [{lo}, {hi}])"
        )
    return Allocation(counts=counts, objective=float(np.sum(v(counts, p))), method=name, diagnostics=diagnostics)


def budget_metrics(counts: np.ndarray) -> dict[str, float]:
    """Summary of one allocation: ``budget/{min,max,mean,std,p10,p50,p90,num_prompts,total}``."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    # Linear-interpolation quantiles (numpy's default), inlined: np.percentile costs ~100 us and
    # this runs every training step.
    pos = np.array([0.1, 0.5, 0.9]) * (c.size - 1)
    below = np.floor(pos).astype(np.int64)
    above = np.minimum(below + 1, c.size - 1)
    q10, q50, q90 = (c[below] + (pos - below) * (c[above] - c[below])).tolist()
    return {
        M.BUDGET_MIN: float(c.min()),
        M.BUDGET_MAX: float(c.max()),
        M.BUDGET_MEAN: float(c.mean()),
        M.BUDGET_STD: float(c.std()),
        M.BUDGET_P10: float(q10),
        M.BUDGET_P50: float(q50),
        M.BUDGET_P90: float(q90),
        M.BUDGET_NUM_PROMPTS: float(c.size),
        M.BUDGET_TOTAL: float(c.sum()),
    }
