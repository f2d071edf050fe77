"""The verl plugin's verl-independent half (cobarl.integrations.verl_plan): runs without verl."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cobarl import Allocator, AllocatorConfig, group_outcomes
from cobarl.integrations.verl_plan import (
    STATE_FILE,
    SharedState,
    batch_total,
    check_divisible,
    content_id,
    get_state,
    load_state,
    parse_settings,
    plan_rollout_n,
    prompt_ids_from_batch,
    required_multiple,
    reset_registry,
    resume_dir,
    save_state,
    session_rewards,
)


@pytest.fixture(autouse=True)
def _clean_registry():
    reset_registry()
    yield
    reset_registry()


def _trained_allocator(strategy="coba", n_prompts=64, seed=0, **kw) -> Allocator:
    """An allocator whose statistics hold varied pass rates, so plans are not uniform."""
    rng = np.random.default_rng(seed)
    a = Allocator(AllocatorConfig(strategy=strategy, **kw))
    ids = np.repeat(np.arange(n_prompts), 8)
    p = rng.uniform(0, 1, n_prompts)
    a.observe(ids, (rng.uniform(size=ids.size) < p[ids]).astype(float))
    return a


# settings --------------------------------------------------------------------------------------------
def test_parse_settings_defaults_and_allocator_fields():
    s = parse_settings({"strategy": "coba-reference", "kappa": 11, "tau": "adaptive", "max_budget": 64, "divisor": 8})
    assert s.name == "default" and s.prompt_key == "index" and s.divisor == 8
    assert s.allocator == AllocatorConfig(strategy="coba-reference", kappa=11, tau="adaptive", max_budget=64)
    assert parse_settings({"tau": "4"}).allocator.tau == 4.0
    assert parse_settings(None) == parse_settings({})


@pytest.mark.parametrize(
    "options, match",
    [({"kapa": 11}, "unknown cobarl option"), ({"prompt_key": "uid"}, "prompt_key"), ({"divisor": 0}, "divisor"),
     ({"strategy": "nope"}, "unknown strategy")],
)
def test_parse_settings_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        parse_settings(options)


# totals and divisibility ---------------------------------------------------------------------------------
def test_totals_and_divisibility():
    assert required_multiple(8) == 8
    assert required_multiple(8, ppo_mini_batch_size=128, rollout_n=16) == 2048
    assert batch_total(256, 16, 2048) == 4096  # train_batch_size x rollout.n, unchanged
    assert batch_total(3, 5, 4) == 12 and batch_total(1, 2, 8) == 8  # partial batches: a multiple, >= multiple
    check_divisible(256, 16, 2048)
    with pytest.raises(ValueError, match="not divisible by 7"):
        check_divisible(256, 16, 7)
    with pytest.raises(ValueError):
        batch_total(0, 16)


# plans ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["coba", "coba-reference", "knapsack-rl", "uniform"])
@pytest.mark.parametrize("n_prompts, mean_n, multiple", [(64, 16, 8), (48, 8, 16), (10, 3, 6)])
def test_plan_sums_bounds_and_divisibility(strategy, n_prompts, mean_n, multiple):
    a = _trained_allocator(strategy, min_budget=2, max_budget=32)
    rng = np.random.default_rng(1)
    ids = rng.permutation(96)[:n_prompts].tolist()  # some seen, some never seen
    total = batch_total(n_prompts, mean_n, multiple)
    plan = plan_rollout_n(a, ids, total)
    assert plan.total == total == plan.rollout_n.sum()
    assert total % multiple == 0
    assert plan.rollout_n.dtype == np.int64 and plan.rollout_n.shape == (n_prompts,)
    assert plan.rollout_n.min() >= 2 and plan.rollout_n.max() <= 32
    assert plan.dropped.size == 0 and plan.metrics()["budget/dropped_prompts"] == 0
    if strategy != "uniform" and mean_n >= 8:
        assert len(set(plan.rollout_n.tolist())) > 1  # the statistics make it non-uniform


def test_plan_drops_lowest_worth_prompts_when_budget_is_short():
    a = _trained_allocator("coba", min_budget=2, max_budget=16)
    ids = list(range(20))
    plan = plan_rollout_n(a, ids, 21)  # < 20 x 2: only 10 prompts can get min_budget
    assert plan.total == 21 and plan.kept.sum() == 10 and plan.dropped.size == 10
    assert set(plan.rollout_n[plan.kept].tolist()) <= set(range(2, 17))
    assert plan.metrics()["budget/dropped_prompts"] == 10.0 and plan.metrics()["budget/num_prompts"] == 10.0
    worth = a.value()(np.full(20, 2), a.stats.pass_rates(ids))
    assert worth[plan.kept].min() >= worth[~plan.kept].max()


def test_plan_rejects_infeasible_totals():
    a = Allocator(strategy="uniform", min_budget=2, max_budget=4)
    with pytest.raises(ValueError, match="max_budget"):
        plan_rollout_n(a, [1, 2], 9)
    with pytest.raises(ValueError, match="no feasible split"):
        plan_rollout_n(a, [1, 2], 1)
    with pytest.raises(ValueError, match="empty"):
        plan_rollout_n(a, [], 4)


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
def test_shared_state_plan_then_observe_matches_allocator():
    settings = parse_settings({"strategy": "coba", "max_budget": 16})
    state = get_state("t", settings)
    assert get_state("t") is state
    uids, pids = ["a", "b", "c", "d"], [10, 11, 12, 10]  # prompt 10 twice in one batch
    plan = state.plan(uids, pids, 16)
    assert set(state.inflight) == {"a", "b", "c", "d"}
    rng = np.random.default_rng(0)
    roll_uids = [u for u, n in zip(uids, plan.rollout_n) for _ in range(n)] + ["pad", "pad"]
    rewards = rng.integers(0, 2, len(roll_uids)).astype(float)
    metrics = state.observe(roll_uids, rewards)

    ref = Allocator(settings.allocator)
    ref.plan(pids, 16)
    pid_of = dict(zip(uids, pids))
    ref.observe([pid_of[u] for u in roll_uids[:-2]], rewards[:-2])
    assert state.allocator.state_dict() == ref.state_dict()
    ids, succ, att = group_outcomes([pid_of[u] for u in roll_uids[:-2]], rewards[:-2])
    assert state.allocator.stats.pass_rates(ids).tolist() == pytest.approx((succ / att).tolist())
    for key in ("budget/mean", "budget/min", "budget/max", "capability/alpha", "capability/beta",
                "capability/failure_rate", "rollout/effective_ratio", "reward/mean", "rollout/count"):
        assert key in metrics, key
    assert metrics["rollout/unplanned"] == 2 and metrics["rollout/count"] == plan.total
    assert metrics["budget/total"] == plan.total and state.inflight == {}
    assert state.observe(["x"], np.array([1.0])) == {"rollout/unplanned": 1.0}


def test_registry_errors():
    with pytest.raises(KeyError, match="CobaAgentLoopManager"):
        get_state("missing")
    get_state("x", parse_settings({}))
    with pytest.raises(ValueError, match="different settings"):
        get_state("x", parse_settings({"kappa": 7}))


# checkpoint files -------------------------------------------------------------------------------------
def test_state_round_trip_is_atomic_and_restores_plans(tmp_path):
    settings = parse_settings({"strategy": "coba", "max_budget": 32})
    state = SharedState(settings)
    rng = np.random.default_rng(2)
    for step in range(3):
        uids = [f"s{step}-{i}" for i in range(12)]
        pids = rng.integers(0, 20, 12).tolist()
        plan = state.plan(uids, pids, 96)
        roll = [u for u, n in zip(uids, plan.rollout_n) for _ in range(n)]
        state.observe(roll[:-5], rng.integers(0, 2, len(roll) - 5).astype(float))  # a few groups stay in flight
    step_dir = tmp_path / "global_step_3"
    path = save_state(step_dir, state.state_dict(), global_step=3)
    assert path.name == STATE_FILE and os.listdir(step_dir) == [STATE_FILE]
    saved = json.loads(path.read_text())
    assert saved["global_step"] == 3 and saved["version"] == 1

    restored = SharedState(settings)
    restored.load_state_dict(load_state(step_dir))
    assert restored.inflight == state.inflight
    ids = list(range(20))
    assert plan_rollout_n(restored.allocator, ids, 160).rollout_n.tolist() == \
        plan_rollout_n(state.allocator, ids, 160).rollout_n.tolist()
    assert load_state(tmp_path / "nowhere") is None
    with pytest.raises(ValueError, match="version"):
        restored.load_state_dict({"version": 99})


def test_resume_dir_mirrors_verl(tmp_path):
    base = tmp_path / "ckpt"
    assert resume_dir({"resume_mode": "auto", "default_local_dir": str(base)}) is None
    (base / "global_step_40").mkdir(parents=True)
    (base / "latest_checkpointed_iteration.txt").write_text("40")
    assert resume_dir({"resume_mode": "auto", "default_local_dir": str(base)}) == str(base / "global_step_40")
    assert resume_dir({"resume_mode": "disable", "default_local_dir": str(base)}) is None
    assert resume_dir({"resume_mode": "resume_path", "resume_from_path": str(base / "global_step_7")}).endswith("global_step_7")


# the guarded import -----------------------------------------------------------------------------------
def test_verl_module_without_verl_says_how_to_install():
    code = (
        "import sys; sys.modules['verl'] = None; sys.modules['transfer_queue'] = None\n"
        "try:\n    import cobarl.integrations.verl\nexcept ImportError as e:\n    print(e)\n"
        "from cobarl.integrations import available; print(available('verl'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'cobarl[verl]'" in out.stdout and out.stdout.strip().endswith("False"), out.stderr
    code = "import sys, cobarl.integrations.verl_plan; print(sorted({'verl', 'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr  # the plan half never imports the heavy stack
