"""The stateful Allocator: plan -> observe loop, strategies, resume parity."""

import json

import numpy as np
import pytest

import cobarl
from cobarl import Allocator, AllocatorConfig


def run_steps(alloc, rng, steps=5, m=16, total=16 * 8):
    plans = []
    true_p = np.linspace(0.02, 0.98, 40)
    for _ in range(steps):
        ids = rng.choice(40, size=m, replace=False).tolist()
        plan = alloc.plan(ids, total)
        plans.append(plan.counts.copy())
        group_ids = np.repeat(ids, plan.counts)
        rewards = (rng.uniform(size=group_ids.size) < true_p[group_ids]).astype(float)
        alloc.observe(group_ids, rewards)
    return plans


@pytest.mark.parametrize("strategy", list(cobarl.STRATEGIES))
def test_every_strategy_keeps_the_budget_contract(strategy):
    alloc = Allocator(strategy=strategy, total_steps=5)
    for counts in run_steps(alloc, np.random.default_rng(0)):
        assert counts.sum() == 128 and counts.min() >= 2 and counts.max() <= 128
    m = alloc.metrics()
    assert {"capability/alpha", "capability/beta", "capability/failure_rate", "budget/mean"} <= set(m)


def test_first_step_is_uniform_then_adapts():
    alloc = Allocator(strategy="coba")
    plans = run_steps(alloc, np.random.default_rng(1), steps=8)
    assert np.all(plans[0] == 8)  # nothing seen: every prompt at the global prior
    assert plans[-1].max() > plans[-1].min()


def test_resume_makes_the_same_next_allocation():
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    a = Allocator(strategy="coba", window=3, stats_window=2)
    run_steps(a, rng_a, steps=6)
    b = Allocator(strategy="coba", window=3, stats_window=2)
    run_steps(b, rng_b, steps=3)
    c = Allocator(strategy="coba", window=3, stats_window=2)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))
    rest_b = run_steps(c, rng_b, steps=3)
    # c, resumed from b's saved state, continues exactly like the uninterrupted a.
    assert a.state_dict() == c.state_dict()
    ids = list(range(16))
    np.testing.assert_array_equal(a.plan(ids, 128).counts, c.plan(ids, 128).counts)
    assert len(rest_b) == 3


def test_callable_strategy():
    def all_to_first(p, total, lo, hi):
        counts = np.full(p.size, lo)
        counts[0] = total - lo * (p.size - 1)
        return counts

    alloc = Allocator(strategy=all_to_first)
    assert alloc.plan([5, 6, 7], 20).counts.tolist() == [16, 2, 2]
    assert json.dumps(alloc.state_dict())  # still serialisable


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown strategy 'grpo'; valid: uniform, coba"):
        AllocatorConfig(strategy="grpo")
