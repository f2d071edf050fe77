"""The stateful Allocator: plan -> observe loop, strategies, resume parity."""

import json

import numpy as np
import pytest

import cobarl
from cobarl import Allocator, StrategyConfig


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


ALLOCATORS = [name for name, s in cobarl.STRATEGIES.items() if s.policy == "allocator"]


@pytest.mark.parametrize("strategy", ALLOCATORS)
def test_every_strategy_keeps_the_budget_contract(strategy):
    alloc = Allocator(strategy=strategy, total_steps=5)
    for counts in run_steps(alloc, np.random.default_rng(0)):
        assert counts.sum() == 128 and counts.min() >= 2 and counts.max() <= 128
    m = alloc.metrics()
    assert {"capability/alpha", "capability/beta", "capability/failure_rate", "budget/mean"} <= set(m)


@pytest.mark.parametrize("strategy", [name for name in cobarl.STRATEGIES if name not in ALLOCATORS])
def test_a_rollout_policy_is_not_built_as_an_allocator(strategy):
    """A policy's strategy record has allocator placeholders: built as an Allocator it would plan uniform
    budgets and silently train as plain GRPO."""
    with pytest.raises(ValueError, match="make_policy"):
        Allocator(strategy=strategy)


def test_first_step_is_uniform_then_adapts():
    alloc = Allocator(strategy="coba")
    plans = run_steps(alloc, np.random.default_rng(1), steps=8)
    assert np.all(plans[0] == 8)  # nothing seen: every prompt at the global prior
    assert plans[-1].max() > plans[-1].min()


@pytest.mark.parametrize("strategy", ["coba", "coba-reference", "knapsack-rl"])
def test_resume_makes_the_same_allocations(strategy):
    options = {} if strategy == "knapsack-rl" else {"stats_window": 2}
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    a = Allocator(strategy=strategy, window=3, **options)
    plans_a = run_steps(a, rng_a, steps=6)
    b = Allocator(strategy=strategy, window=3, **options)
    run_steps(b, rng_b, steps=3)
    c = Allocator(strategy=strategy, window=3, **options)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))
    plans_c = run_steps(c, rng_b, steps=3)
    # c, resumed from b's saved state, continues exactly like the uninterrupted a.
    for pa, pc in zip(plans_a[3:], plans_c):
        np.testing.assert_array_equal(pa, pc)
    assert a.state_dict() == c.state_dict()


def test_callable_strategy():
    def all_to_first(p, total, lo, hi):
        counts = np.full(p.size, lo)
        counts[0] = total - lo * (p.size - 1)
        return counts

    alloc = Allocator(strategy=all_to_first)
    assert alloc.plan([5, 6, 7], 20).counts.tolist() == [16, 2, 2]
    alloc.observe([5, 5, 6], [1.0, 0.0, 1.0])
    # The state names the callable, so it resumes into the same callable and no other.
    again = Allocator(strategy=all_to_first)
    again.load_state_dict(json.loads(json.dumps(alloc.state_dict())))
    np.testing.assert_array_equal(again.pass_rates([5, 6]), [0.5, 1.0])
    with pytest.raises(ValueError, match="method: saved 'all_to_first', now 'threshold'"):
        Allocator(strategy="coba").load_state_dict(alloc.state_dict())


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown strategy 'grpo'; valid: uniform, coba"):
        StrategyConfig(strategy="grpo")


def test_each_strategy_runs_with_its_papers_statistics():
    coba_ref = StrategyConfig(strategy="coba-reference")
    assert (coba_ref.tau, coba_ref.success, coba_ref.stats, coba_ref.prior) == ("adaptive", "==1", "appearances", "half")
    knap = Allocator(strategy="knapsack-rl").config
    assert (knap.stats, knap.recent_rollouts, knap.min_rollouts, knap.stats_window) == ("recent-rollouts", 16, 8, None)
    assert "tau" not in knap.to_dict() and "stats_window" not in knap.to_dict()  # options that do nothing here
    coba = StrategyConfig(strategy="coba", window=3)
    assert coba.tau == 8.0 and coba.overrides == {"window": 3}
    # Options the user did not set follow the strategy, also through replace (how configs are derived).
    assert coba.replace(strategy="coba-reference").tau == "adaptive"
    assert coba.replace(strategy="knapsack-rl").stats == "recent-rollouts"
    assert coba.replace(strategy="knapsack-rl").window == 3
    # A Knapsack-RL prompt that scored 2/2 once is not "solved": it is unseen until 8 rollouts.
    alloc = Allocator(strategy="knapsack-rl", max_budget=16)
    alloc.observe([5, 5], np.array([1.0, 1.0]))
    assert not alloc.seen([5])[0]


def test_success_rule_reaches_statistics_and_capability():
    strict = Allocator(strategy="coba")  # the public code's reward == 1
    loose = Allocator(strategy="coba", success=">0.5")
    ids, rewards = [1, 1, 2, 2], np.array([1.0, 0.9, 0.9, 0.0])
    strict.observe(ids, rewards)
    loose.observe(ids, rewards)
    np.testing.assert_array_equal(strict.pass_rates([1, 2]), [0.5, 0.0])
    np.testing.assert_array_equal(loose.pass_rates([1, 2]), [1.0, 0.5])
    assert strict.metrics()["capability/failure_rate"] == 0.75
    assert loose.metrics()["capability/failure_rate"] == 0.25


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gamma=float("nan")), "gamma must be a finite number > 0"),
        (dict(kappa=float("inf")), "kappa must be a finite number > 2"),
        (dict(kappa=1), "kappa must be a finite number > 2"),
        (dict(tau=True), "tau must be a finite number > 0"),
        (dict(tau=-3), "tau must be a finite number > 0"),
        (dict(window=0), "window must be an integer >= 1"),
        (dict(min_budget=True), "min_budget must be an integer"),
        (dict(success="1"), "success rule '1' is not understood"),
        (dict(strategy="knapsack-rl", stats_window=3), "stats_window applies when stats is 'appearances'"),
        (dict(strategy="coba", min_rollouts=4), "min_rollouts applies when stats is 'recent-rollouts'"),
        (dict(strategy="knapsack", tau=4), "tau applies when value is 'coba'"),
        (dict(strategy="coba", fixed_alpha=2), "fixed_alpha applies when schedule is 'fixed'"),
        (dict(stats="ema"), "stats must be one of appearances, recent-rollouts, got 'ema'"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        StrategyConfig(**kwargs)


def test_plan_refuses_float_budget_and_duplicate_ids():
    alloc = Allocator(strategy="coba")
    with pytest.raises(TypeError, match="total_budget must be an integer"):
        alloc.plan([1, 2], 16.7)
    with pytest.raises(ValueError, match="prompt id 1 appears twice"):
        alloc.plan([1, 2, 1], 16)


def test_load_state_is_all_or_nothing_and_refuses_another_run():
    a = Allocator(strategy="coba")
    run_steps(a, np.random.default_rng(4), steps=2)
    state = json.loads(json.dumps(a.state_dict()))
    for other, message in (
        (Allocator(strategy="coba-reference"), "method: saved 'threshold', now 'coba-reference'"),
        (Allocator(strategy="coba", window=3), "window: saved 1, now 3"),
    ):
        before = other.state_dict()
        with pytest.raises(ValueError, match=message):
            other.load_state_dict(state)
        assert other.state_dict() == before
    broken = json.loads(json.dumps(state))
    broken["tracker"] = {"failures": [0.5]}  # no "step": fails after the stats would have loaded
    fresh = Allocator(strategy="coba")
    with pytest.raises(KeyError):
        fresh.load_state_dict(broken)
    assert fresh.state_dict() == Allocator(strategy="coba").state_dict()
    with pytest.raises(ValueError, match="version"):
        fresh.load_state_dict({**state, "version": 1})
    with pytest.raises(ValueError, match=r"not a cobarl\.allocator state: its format is None \(none given\)"):
        fresh.load_state_dict({"stats": state["stats"], "tracker": state["tracker"]})
    with pytest.raises(ValueError, match=r"not a cobarl\.allocator state: its format is 'cobarl\.verl-plugin'"):
        fresh.load_state_dict({**state, "format": "cobarl.verl-plugin"})


def test_metrics_follow_the_schema_and_its_timing():
    from cobarl.metrics import SCHEMA

    alloc = Allocator(strategy="coba")
    used = alloc.params()
    alloc.plan([1, 2], 8)
    m = alloc.observe([1, 1, 1, 1, 2, 2, 2, 2], np.array([1.0, 1, 1, 1, 0, 0, 0, 1]))
    assert set(m) <= set(SCHEMA)
    # alpha/beta: what this step's plan used, not what the next plan will use.
    assert (m["capability/alpha"], m["capability/beta"]) == used != alloc.params()
    assert m["capability/failure_rate"] == pytest.approx(1 - (1.0 + 0.25) / 2)


def test_allocator_options_are_refused_for_a_policy_that_ignores_them():
    """kappa, tau, success, ... mean nothing to Reinforce-Ada or DAPO: refused, not silently ignored."""
    for options in ({"kappa": 7.0}, {"success": ">0.5"}, {"tau": 4.0}, {"stats_window": 2}, {"max_budget": 32}):
        with pytest.raises(ValueError, match=f"{next(iter(options))} is an option of allocator, not of 'reinforce-ada'"):
            StrategyConfig(strategy="reinforce-ada", **options)
    with pytest.raises(ValueError, match="round_size is an option of reinforce-ada, not of 'dapo'"):
        StrategyConfig(strategy="dapo", round_size=4)
    assert StrategyConfig("dapo").to_dict() == {"strategy": "dapo", "gen_batch_factor": 3, "max_gen_batches": 10}
