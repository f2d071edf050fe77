"""Allocators: optimality against heap / DP / brute force, invariants, reference paths, bad input."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cobarl
from cobarl.allocation import METHODS, greedy

ALL_METHODS = [m for m in METHODS]


@st.composite
def problems(draw, max_prompts=12, max_hi=10):
    m = draw(st.integers(1, max_prompts))
    lo = draw(st.integers(1, 4))
    hi = draw(st.integers(lo, lo + max_hi))
    total = draw(st.integers(m * lo, m * hi))
    # Mix continuous pass rates with the exact 0/1 and repeated values that cause ties.
    p = draw(st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.25, 0.5, 1.0])), min_size=m, max_size=m))
    return np.array(p), total, lo, hi


@st.composite
def values(draw):
    if draw(st.booleans()):
        return cobarl.KnapsackValue()
    alpha = draw(st.floats(1.0, 10.0))
    tau = draw(st.one_of(st.floats(0.5, 20.0), st.just("adaptive")))
    return cobarl.CobaValue(alpha=alpha, beta=11.0 - alpha, tau=tau)


def brute_force(value, p, total, lo, hi):
    best = -np.inf
    for combo in itertools.product(range(lo, hi + 1), repeat=len(p)):
        if sum(combo) == total:
            best = max(best, float(value(np.array(combo), p).sum()))
    return best


@settings(max_examples=200, deadline=None)
@given(problems(), values())
def test_threshold_matches_heap_and_dp(problem, value):
    p, total, lo, hi = problem
    fast = cobarl.allocate(p, total, min_budget=lo, max_budget=hi, value=value, method="threshold")
    # The same instance through the bisection path (small tables are otherwise sorted whole).
    saved, greedy.SORT_ALL_BELOW = greedy.SORT_ALL_BELOW, 0
    try:
        bisected = cobarl.allocate(p, total, min_budget=lo, max_budget=hi, value=value, method="threshold")
    finally:
        greedy.SORT_ALL_BELOW = saved
    np.testing.assert_array_equal(bisected.counts, fast.counts)
    heap = cobarl.allocate(p, total, min_budget=lo, max_budget=hi, value=value, method="heap")
    dp = cobarl.allocate(p, total, min_budget=lo, max_budget=hi, value=value, method="dp")
    # The threshold solver hands out exactly the heap's units (same tie-breaking), so counts agree.
    np.testing.assert_array_equal(fast.counts, heap.counts)
    assert fast.objective == heap.objective
    assert fast.objective == pytest.approx(dp.objective, rel=1e-12, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(problems(max_prompts=4, max_hi=4), values())
def test_greedy_equals_brute_force_on_tiny_instances(problem, value):
    p, total, lo, hi = problem
    res = cobarl.allocate(p, total, min_budget=lo, max_budget=hi, value=value)
    assert res.objective == pytest.approx(brute_force(value, p, total, lo, hi), rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(problems(), st.sampled_from(ALL_METHODS))
def test_invariants_hold_for_every_method(problem, method):
    p, total, lo, hi = problem
    seen = p != 0.25  # exercise the "never seen" paths of the reference policies
    res = cobarl.allocate(p, total, min_budget=lo, max_budget=hi, method=method, seen=seen)
    assert res.counts.dtype == np.int64
    assert res.counts.sum() == total
    assert res.counts.min() >= lo and res.counts.max() <= hi
    again = cobarl.allocate(p, total, min_budget=lo, max_budget=hi, method=method, seen=seen)
    np.testing.assert_array_equal(res.counts, again.counts)


def test_objective_is_value_of_counts():
    p = np.random.default_rng(0).uniform(size=512)
    v = cobarl.CobaValue(alpha=7.26, beta=3.74, tau=8.0)
    res = cobarl.allocate(p, 8192, min_budget=2, max_budget=128, value=v)
    assert res.counts.sum() == 8192
    assert v(res.counts, p).sum() == res.objective


def test_paper_scale_matches_heap_exactly():
    p = np.random.default_rng(1).beta(0.5, 0.5, size=512)
    v = cobarl.CobaValue(alpha=4.5, beta=6.5, tau="adaptive")
    fast = cobarl.allocate(p, 8192, value=v)
    heap = cobarl.allocate(p, 8192, value=v, method="heap")
    assert fast.method == "threshold"
    np.testing.assert_array_equal(fast.counts, heap.counts)


def test_budget_follows_beta_mode():
    # Exploit phase (alpha = 7.3): the mass sits on easy-ish prompts; explore (alpha = 2.1): on hard ones.
    p = np.linspace(0.02, 0.98, 49)
    easy = cobarl.allocate(p, 49 * 16, value=cobarl.CobaValue(alpha=7.3, beta=3.7)).counts
    hard = cobarl.allocate(p, 49 * 16, value=cobarl.CobaValue(alpha=2.1, beta=8.9)).counts
    assert 0.55 < p[np.argmax(easy)] < 0.85
    assert 0.05 < p[np.argmax(hard)] < 0.3
    assert easy[0] == 2 and hard[-1] == 2  # prompts outside the peak stay at the minimum


def test_uniform_is_plain_grpo():
    res = cobarl.allocate(np.full(5, 0.3), 42, method="uniform")
    np.testing.assert_array_equal(res.counts, [9, 9, 8, 8, 8])


def test_ties_go_to_lower_index():
    res = cobarl.allocate(np.full(4, 0.5), 9, min_budget=2, max_budget=8)
    np.testing.assert_array_equal(res.counts, [3, 2, 2, 2])


def test_knapsack_rl_unseen_prompts_share_the_p0_surplus():
    # The public code reads an unseen prompt's rate as 0, so unseen prompts get the nominal n AND
    # a share of the surplus meant for p = 0 prompts (method notes B.3; public output [5, 5, 11, 11]).
    p = np.array([0.0, 0.5, 0.0, 0.0])
    res = cobarl.allocate(p, 32, min_budget=2, max_budget=128, method="knapsack-rl", seen=np.array([1, 1, 0, 0], bool))
    np.testing.assert_array_equal(res.counts, [5, 5, 11, 11])
    # cost ln 0.1 / ln 0.5 = 3.32 -> 3 for the knapsack; 32 - 20 - 3 = 9 spread over three "zero" prompts.
    assert res.diagnostics["fallback"] == 9


def test_knapsack_rl_where_the_public_code_divides_by_zero():
    # Every prompt effective and the summed cost below the budget: the public code has no prompt to
    # give the surplus to and fails; cobarl gives the knapsack the whole budget.
    p = np.array([0.5, 0.5, 0.5, 0.5])
    res = cobarl.allocate(p, 64, min_budget=2, max_budget=32, method="knapsack-rl")
    assert res.counts.sum() == 64 and res.counts.max() <= 32
    np.testing.assert_array_equal(res.counts, [16, 16, 16, 16])


def test_knapsack_rl_uncapped_public_surplus_is_capped():
    # One p = 0 prompt would receive the whole surplus (above max_budget); the overflow goes on.
    p = np.array([0.0, 0.5, 0.5, 1.0])
    res = cobarl.allocate(p, 4 * 16, min_budget=2, max_budget=16, method="knapsack-rl")
    assert res.counts[0] == 16 and res.counts.sum() == 64 and res.counts.max() <= 16
    assert res.diagnostics["overflow"] > 0


def test_knapsack_rl_nominal_budget_for_unseen_prompts():
    seen = np.array([True, False, False])
    res = cobarl.allocate([1.0, 0.0, 0.0], 30, min_budget=2, max_budget=16, method="knapsack-rl", seen=seen, nominal_budget=8)
    # seen p = 1 at 2, unseen at 8 each, then the no-effective rule spreads 12 over the two unseen.
    np.testing.assert_array_equal(res.counts, [2, 14, 14])
    # A nominal budget that cannot fit (the public code fails its final check): unseen prompts get what fits.
    res = cobarl.allocate([1.0, 0.0, 0.0], 30, max_budget=16, method="knapsack-rl", seen=seen, nominal_budget=16)
    np.testing.assert_array_equal(res.counts, [2, 14, 14])
    assert res.diagnostics["nominal"] == 14


def test_coba_reference_leftover_uses_the_running_remainder():
    # Method notes A.4: each share is int(R_now * w / W) with R_now decremented as the loop runs,
    # then one even pass: public output [36, 28, 24, 20].
    res = cobarl.allocate(np.zeros(4), 108, min_budget=2, max_budget=128, method="coba-reference",
                          value=cobarl.CobaValue(tau="adaptive"))
    np.testing.assert_array_equal(res.counts, [36, 28, 24, 20])


def test_coba_reference_feeds_hard_prompts_from_the_leftover():
    p = np.array([0.0, 0.0, 0.5, 0.6, 1.0, 1.0])
    res = cobarl.allocate(p, 6 * 16, method="coba-reference", value=cobarl.CobaValue(alpha=7.3, beta=3.7, tau="adaptive"))
    assert res.diagnostics["exploration"] == 2
    assert res.diagnostics["exploration_share"] == pytest.approx(0.6 + 0.2 * 2 * 2 / 6)
    # Very hard prompts get the fallback first; very easy ones keep (almost) the minimum.
    assert res.counts[0] > 2 and res.counts[1] > 2
    assert res.counts[4] == 2 and res.counts[5] == 2


def test_coba_reference_spends_what_the_public_code_leaves_unspent():
    # Near M * max the single remainder pass cannot place everything; the public code hands out
    # fewer rollouts than asked. cobarl spreads the rest over prompts below max_budget.
    # Public: shares 5, 4, 3, 2 of 23, then the capped pass leaves 2 unplaced -> [8, 8, 7, 6] (29).
    res = cobarl.allocate(np.zeros(4), 31, min_budget=2, max_budget=8, method="coba-reference",
                          value=cobarl.CobaValue(tau="adaptive"))
    assert res.diagnostics["unspent"] == 2
    np.testing.assert_array_equal(res.counts, [8, 8, 8, 7])


def test_coba_reference_all_unseen_is_uniform():
    res = cobarl.allocate(np.full(4, 0.5), 34, method="coba-reference", seen=np.zeros(4, dtype=bool))
    np.testing.assert_array_equal(res.counts, [9, 9, 8, 8])


def test_callable_method_and_value():
    def first_gets_rest(p, total, lo, hi):
        counts = np.full(p.size, lo)
        counts[0] += total - counts.sum()
        return counts

    res = cobarl.allocate([0.2, 0.4], 10, method=first_gets_rest, max_budget=8)
    np.testing.assert_array_equal(res.counts, [8, 2])
    linear = cobarl.allocate([0.2, 0.4], 10, value=lambda b, p: b * p, max_budget=8)
    assert linear.method == "heap"  # a plain callable is not assumed concave
    np.testing.assert_array_equal(linear.counts, [2, 8])


def test_min_budget_two_means_no_singletons():
    p = np.random.default_rng(3).uniform(size=64)
    for method in ALL_METHODS:
        assert cobarl.allocate(p, 64 * 4, method=method).counts.min() >= 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pass_rates=[0.1, float("nan")], total_budget=8), r"pass_rates\[1\] = nan"),
        (dict(pass_rates=[0.1, float("inf")], total_budget=8), r"pass_rates\[1\] = inf"),
        (dict(pass_rates=[1.5, 0.1], total_budget=8), r"pass_rates\[0\] = 1.5"),
        (dict(pass_rates=[0.1, 0.2], total_budget=3), r"below 2 prompts x min_budget=2 = 4"),
        (dict(pass_rates=[0.1, 0.2], total_budget=300), r"above 2 prompts x max_budget=128 = 256"),
        (dict(pass_rates=[0.1, 0.2], total_budget=8, min_budget=5, max_budget=4), "larger than max_budget"),
        (dict(pass_rates=[], total_budget=8), "empty"),
        (dict(pass_rates=[0.1], total_budget=-1), "total_budget must be >= 0"),
        (dict(pass_rates=[0.1], total_budget=8.5), "total_budget must be an integer"),
        (dict(pass_rates=[0.1], total_budget=8, min_budget=2.0), "min_budget must be an integer"),
        (dict(pass_rates=[0.1], total_budget=8, method="greedy"), "unknown method 'greedy'; valid: auto, coba-reference, dp"),
        (dict(pass_rates=[0.1], total_budget=8, method=None), "unknown method None"),
        (dict(pass_rates=[0.1], total_budget=8, value="beta"), "unknown value function 'beta'; valid: coba, gvm, knapsack"),
        (dict(pass_rates=[[0.1]], total_budget=8), "must be 1-D"),
        (dict(pass_rates=[0.1, 0.2], total_budget=8, seen=np.ones(3, dtype=bool)), "seen must be a bool array"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        cobarl.allocate(**kwargs)


def test_bad_input_changes_nothing():
    p = np.array([0.1, np.nan])
    with pytest.raises(ValueError):
        cobarl.allocate(p, 8)
    assert np.isnan(p[1]) and p[0] == 0.1


def test_threshold_refuses_non_concave_values():
    with pytest.raises(ValueError, match="concave"):
        cobarl.allocate([0.1, 0.2], 8, value=lambda b, p: b**2, method="threshold")


def test_budget_metrics():
    m = cobarl.budget_metrics(np.array([2, 2, 4, 8]))
    assert m["budget/min"] == 2 and m["budget/max"] == 8 and m["budget/mean"] == 4 and m["budget/total"] == 16
