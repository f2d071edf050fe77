"""The verl plugin's verl-independent half (cobarl.integrations.verl_plan): runs without verl."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cobarl import Allocator, StrategyConfig
from cobarl.integrations.verl_plan import (
    balance_workers,
    check_rollout_n,
    content_id,
    contiguous_chunks,
    parse_settings,
    plan_rollout_n,
    prompt_ids_from_batch,
    session_rewards,
    worker_totals,
)
from cobarl.integrations.verl_state import SharedState, get_state, reset_registry
from cobarl.io import STATE_FILE, load_state, save_state


@pytest.fixture(autouse=True)
def _clean_registry():
    reset_registry()
    yield
    reset_registry()


def _trained_allocator(strategy="coba", n_prompts=64, seed=0, **kw) -> Allocator:
    """An allocator whose statistics hold varied pass rates, so plans are not uniform."""
    rng = np.random.default_rng(seed)
    a = Allocator(StrategyConfig(strategy=strategy, **kw))
    ids = np.repeat(np.arange(n_prompts), 8)
    p = rng.uniform(0, 1, n_prompts)
    a.observe(ids, (rng.uniform(size=ids.size) < p[ids]).astype(float))
    return a


# settings --------------------------------------------------------------------------------------------
def test_parse_settings_defaults_and_allocator_fields():
    s = parse_settings({"strategy": "coba-reference", "kappa": 11, "tau": "adaptive", "max_budget": 64})
    assert s.name == "default" and s.prompt_key == "index" and s.missing_state == "error"
    assert s.strategy == StrategyConfig(strategy="coba-reference", kappa=11, tau="adaptive", max_budget=64)
    assert parse_settings({"tau": "4"}).strategy.tau == 4.0
    assert parse_settings(None) == parse_settings({})


@pytest.mark.parametrize(
    "options, match",
    [({"kapa": 11}, "unknown cobarl option"), ({"prompt_key": "uid"}, "prompt_key"), ({"divisor": 8}, "was removed"),
     ({"missing_state": "ignore"}, "missing_state"), ({"strategy": "nope"}, "unknown strategy"),
     ({"strategy": "linear-decay"}, "sampler_kwargs.total_steps")],
)
def test_parse_settings_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        parse_settings(options)


# the per-batch invariant ------------------------------------------------------------------------------
def test_check_rollout_n():
    check_rollout_n(16, StrategyConfig(min_budget=2, max_budget=128))
    with pytest.raises(ValueError, match=r"rollout.n=1 must lie in \[min_budget, max_budget\] = \[2, 128\]"):
        check_rollout_n(1, StrategyConfig(min_budget=2, max_budget=128))
    with pytest.raises(ValueError, match="max_budget"):
        check_rollout_n(32, StrategyConfig(min_budget=2, max_budget=16))
    with pytest.raises(ValueError, match="group of one"):
        check_rollout_n(4, StrategyConfig(min_budget=1, max_budget=16))


@pytest.mark.parametrize("strategy", ["coba", "coba-reference", "knapsack-rl", "uniform"])
@pytest.mark.parametrize("k", [1, 2, 3, 16, 32, 256])  # refills, re-issues and full batches
def test_plan_is_k_times_n_for_every_batch_size(strategy, k):
    """The batch sizes verl sends (async refills after evictions, re-issue on resume, DAPO refills,
    full batches): k prompts -> exactly k x rollout.n rollouts, each in [min_budget, max_budget]."""
    a = _trained_allocator(strategy, n_prompts=300, min_budget=2, max_budget=128)
    rng = np.random.default_rng(k)
    ids = rng.permutation(400)[:k].tolist()  # some seen, some never seen
    plan = plan_rollout_n(a, ids, 16)
    assert plan.total == plan.rollout_n.sum() == 16 * k
    assert plan.rollout_n.dtype == np.int64 and plan.rollout_n.shape == (k,)
    assert plan.rollout_n.min() >= 2 and plan.rollout_n.max() <= 128
    if strategy != "uniform" and k >= 16:
        assert len(set(plan.rollout_n.tolist())) > 1  # the statistics make it non-uniform


def test_plan_with_repeated_prompt_keeps_total():
    a = _trained_allocator("coba", min_budget=2, max_budget=32)
    plan = plan_rollout_n(a, [3, 5, 3, 7], 8)
    assert plan.total == 32 and plan.rollout_n[2] == 8  # the repeat gets rollout.n, the rest is shaped
    assert plan.allocation.counts.sum() == 24


def test_plan_rejects_empty_and_infeasible():
    a = Allocator(strategy="uniform", min_budget=2, max_budget=4)
    with pytest.raises(ValueError, match="empty"):
        plan_rollout_n(a, [], 4)
    with pytest.raises(ValueError, match="must lie in"):
        plan_rollout_n(a, [1, 2], 5)


# worker balance ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [2, 3, 8])
def test_balance_workers_spread_at_most_one_budget(workers):
    a = _trained_allocator("coba", n_prompts=256, min_budget=2, max_budget=128)
    counts = plan_rollout_n(a, list(range(256)), 16).rollout_n
    parts = balance_workers(counts, workers)
    assert sorted(np.concatenate(parts).tolist()) == list(range(256))
    totals = worker_totals(counts, parts, workers)
    assert totals.sum() == counts.sum() and totals.max() - totals.min() <= counts.max()
    before = worker_totals(counts, contiguous_chunks(256, workers), workers)
    assert totals.max() - totals.min() <= before.max() - before.min()
    assert balance_workers([5], 4)[0].tolist() == [0] and [p.size for p in balance_workers([5], 4)] == [1, 0, 0, 0]


# prompt ids and finished groups -----------------------------------------------------------------------
def test_prompt_ids_from_index_or_content():
    assert prompt_ids_from_batch(np.array([3, 4], dtype=object), None) == ([3, 4], "index")
    assert prompt_ids_from_batch([np.int64(7), 2.0, "a"], None)[0] == [7, 2, "a"]
    msgs = [[{"role": "user", "content": "1+1"}], [{"role": "user", "content": "2+2"}]]
    ids, mode = prompt_ids_from_batch([0, 0], msgs)  # verl's default index is 0 for every row
    assert mode == "content" and ids == [content_id(m) for m in msgs] and ids[0] != ids[1]
    assert prompt_ids_from_batch([1, 2], msgs, "content")[0] == ids
    assert content_id([{"content": "1+1", "role": "user"}]) == ids[0]  # key order does not matter
    with pytest.raises(ValueError, match="neither"):
        prompt_ids_from_batch(None, None)


def test_session_rewards_takes_final_output_of_each_session():
    keys = ["u1_0_0", "u1_0_1", "u1_1_0", "u-2_0_0", "u1_2_0"]
    uids, r = session_rewards(keys, [0.0, 1.0, 0.0, 1.0, 1.0])
    assert uids == ["u1", "u1", "u-2", "u1"] and r.tolist() == [1.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unexpected trajectory key"):
        session_rewards(["nounderscore"], [1.0])


# shared state -------------------------------------------------------------------------------------------
def test_shared_state_one_update_per_flush_matches_allocator():
    settings = parse_settings({"strategy": "coba", "max_budget": 16})
    state = get_state("t", settings)
    assert get_state("t") is state
    uids, pids = ["a", "b", "c", "d"], [10, 11, 12, 10]  # prompt 10 twice in one batch
    plan = state.plan(uids, pids, 4)
    assert set(state.inflight) == set(uids) and plan.total == 16
    rng = np.random.default_rng(0)
    roll_uids = [u for u, n in zip(uids, plan.rollout_n) for _ in range(n)]
    rewards = rng.integers(0, 2, len(roll_uids)).astype(float)
    half = len(roll_uids) // 2  # two sample() calls in one step
    state.add(roll_uids[:half], rewards[:half])
    state.add(roll_uids[half:] + ["pad", "pad"], np.concatenate([rewards[half:], [1.0, 1.0]]))
    assert state.steps == 0 and len(state.pending) == len(roll_uids)
    metrics = state.flush()
    assert state.steps == 1 and state.pending == [] and state.inflight == {}
    ref = Allocator(settings.strategy)
    ref.plan([10, 11, 12], 12)
    pid_of = dict(zip(uids, pids))
    ref.observe([pid_of[u] for u in roll_uids], rewards)  # one observe = one tracker update
    assert state.allocator.state_dict() == ref.state_dict()
    for key in ("budget/mean", "budget/min", "budget/max", "capability/alpha", "capability/beta",
                "capability/failure_rate", "rollout/effective_ratio", "reward/mean", "rollout/count"):
        assert key in metrics, key
    assert metrics["rollout/unplanned"] == 2 and metrics["rollout/count"] == plan.total
    assert metrics["budget/total"] == plan.total
    assert state.flush() == {}
    state.add(["x"], [1.0])
    assert state.flush() == {"rollout/unplanned": 1.0} and state.steps == 1


def test_registry_errors():
    with pytest.raises(KeyError, match="custom_sampler"):
        get_state("missing")
    get_state("x", parse_settings({}))
    with pytest.raises(ValueError, match="different settings"):
        get_state("x", parse_settings({"kappa": 7}))


# where each policy runs ---------------------------------------------------------------------------------
def test_every_strategy_has_a_place_in_verl():
    from cobarl.integrations.verl_plan import RUNNER_MODES, verl_runner
    from cobarl.policies import POLICIES

    runners = {name: verl_runner(cls) for name, cls in POLICIES.items()}
    assert runners == {"allocator": "plan", "reinforce-ada": "worker", "dapo": "verl", "pods": "worker", "greso": "trainer"}
    assert all(set(modes) <= {"sync", "colocate_async", "separate_async"} for modes in RUNNER_MODES.values())
    for strategy in ("reinforce-ada", "reinforce-ada-pos", "pods", "greso"):  # their own options are accepted
        assert parse_settings({"strategy": strategy}).strategy.name == strategy


@pytest.mark.parametrize("strategy, options", [("reinforce-ada", {}), ("reinforce-ada-pos", {"max_rounds": 3}),
                                               ("reinforce-ada", {"pool_baseline": "mean", "scale_by_std": True}),
                                               ("pods", {}), ("pods", {"generate_size": 7})])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_per_prompt_policy_decides_the_same_one_prompt_at_a_time(strategy, options, seed):
    """What lets verl's agent-loop workers run a `per_prompt` policy one prompt at a time: the same rewards give
    the same kept rows (by prompt and pool position) and baselines as one step over the whole batch."""
    from collections import Counter

    from cobarl.policies import make_policy, run_step

    rates = np.random.default_rng(seed).uniform(size=12)

    def play(prompts):
        seen, rows = Counter(), []

        def generate(ids):
            out = []
            for pid in ids:
                rows.append((pid, seen[pid]))
                out.append(float(np.random.default_rng([seed, pid, seen[pid]]).random() < rates[pid]))
                seen[pid] += 1
            return np.array(out)

        result = run_step(make_policy(strategy, **options), prompts, 4 * len(prompts), generate)
        assert make_policy(strategy).per_prompt
        kept = {rows[g] for g in result.kept.rows.tolist()}
        return kept, result.kept.baselines or {}, len(result.group_ids)

    whole = play(list(range(12)))
    alone = [play([pid]) for pid in range(12)]
    assert whole[0] == set().union(*(a[0] for a in alone))
    assert whole[1] == {k: v for a in alone for k, v in a[1].items()}
    assert whole[2] == sum(a[2] for a in alone)


def test_group_records_give_the_trl_step_metrics_and_run_totals(tmp_path):
    from cobarl.integrations.verl_state import GroupRecord

    state = SharedState(parse_settings({"strategy": "reinforce-ada"}))
    pools = {"a": [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0], "b": [0.0] * 16}
    state.record([GroupRecord("a", np.array(pools["a"]), np.array([1.0, 1.0, 0.0, 0.0]), 8, 1, 40, {"rollout/unfinished": 0}),
                  GroupRecord("b", np.array(pools["b"]), np.zeros(4), 8, 2, 70, {"rollout/unfinished": 1}),
                  GroupRecord("c", np.array([1.0] * 8), np.zeros(0), 8, 1, 30, {"rollout/unfinished": 0})])  # evicted
    m = state.flush()
    assert (m["rollout/count"], m["rollout/trained"], m["rollout/rounds"], m["rollout/prompts"]) == (32, 8, 2, 3)
    assert m["rollout/completion_tokens"] == 140 and m["rollout/unfinished"] == 1 and m["budget/total"] == 24
    assert m["reward/mean"] == pytest.approx(12 / 32) and m["rollout/effective_ratio"] == 0.5  # trained rows of "a" only
    state.record([GroupRecord("d", np.ones(4), np.ones(4), tokens=5)], rounds=3, prompts=5, skipped=2, plan=[4, 4])
    m2 = state.flush()
    assert (m2["rollout/rounds"], m2["rollout/prompts"], m2["rollout/skipped"], m2["budget/total"]) == (3, 5, 2, 8)
    summary = state.summary()
    assert summary == {"strategy": "reinforce-ada", "steps": 2, "rollouts": 36, "rollouts_trained": 12,
                       "completion_tokens": 145, "rounds_per_step": 2.5, "prompts": 8, "skipped": 2}
    restored = SharedState(state.settings)
    restored.load_state_dict(json.loads(json.dumps(state.state_dict(global_step=2))))
    assert restored.summary() == summary and restored.steps == 2


# checkpoint files -------------------------------------------------------------------------------------
def test_state_round_trip_is_atomic_and_restores_plans(tmp_path):
    settings = parse_settings({"strategy": "coba", "max_budget": 32})
    state = SharedState(settings)
    rng = np.random.default_rng(2)
    for step in range(3):
        uids = [f"s{step}-{i}" for i in range(12)]
        pids = rng.integers(0, 20, 12).tolist()
        plan = state.plan(uids, pids, 8)
        roll = [u for u, n in zip(uids, plan.rollout_n) for _ in range(n)]
        state.add(roll[:-5], rng.integers(0, 2, len(roll) - 5).astype(float))  # a few groups stay in flight
        state.flush()
    step_dir = tmp_path / "global_step_3"
    path = save_state(step_dir, state.state_dict(global_step=3))
    assert path.name == STATE_FILE and os.listdir(step_dir) == [STATE_FILE]
    saved = json.loads(path.read_text())
    assert saved["global_step"] == 3 and (saved["format"], saved["version"]) == ("cobarl.verl-plugin", 2)

    restored = SharedState(settings)
    restored.load_state_dict(load_state(step_dir))
    assert restored.inflight == state.inflight
    ids = list(range(20))
    assert restored.steps == state.steps == 3
    assert plan_rollout_n(restored.allocator, ids, 8).rollout_n.tolist() == \
        plan_rollout_n(state.allocator, ids, 8).rollout_n.tolist()
    assert load_state(tmp_path / "nowhere", missing_ok=True) is None
    with pytest.raises(ValueError, match="version"):
        restored.load_state_dict({**saved, "version": 99})
    with pytest.raises(ValueError, match="not a cobarl.verl-plugin state: its format is 'cobarl.allocator'"):
        restored.load_state_dict(state.allocator.state_dict())
    unnamed = {k: v for k, v in saved.items() if k != "format"}  # written before formats were named
    SharedState(settings).load_state_dict(unnamed)
    for other in ({"strategy": "pods"}, {"strategy": "reinforce-ada", "round_size": 16}):  # not the saved run's
        with pytest.raises(ValueError, match="saved with another strategy or options"):
            SharedState(parse_settings(other)).load_state_dict(saved)


# the guarded import -----------------------------------------------------------------------------------
def test_verl_module_without_verl_says_how_to_install():
    code = (
        "import sys; sys.modules['verl'] = None; sys.modules['transfer_queue'] = None\n"
        "try:\n    import cobarl.integrations.verl\nexcept ImportError as e:\n    print(e)\n"
        "from cobarl.integrations import available; print(available('verl'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'cobarl[verl]'" in out.stdout and out.stdout.strip().endswith("False"), out.stderr
    code = "import sys, cobarl.integrations.verl_plan, cobarl.integrations.verl_state; print(sorted({'verl', 'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr  # the plan half never imports the heavy stack
