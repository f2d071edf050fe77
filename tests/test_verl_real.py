"""cobarl's verl plugin against REAL verl 0.9 components on CPU, for the plan-before-generation
allocators (and verl's own DAPO filter): the world and its fakes are described in tests/verl_world.py."""

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

import torch  # noqa: E402
import transfer_queue as tq  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.checkpoint_callback import CheckpointCallback  # noqa: E402
from verl.trainer.ppo.v1 import get_trainer_cls  # noqa: E402
from verl_world import N_PROMPTS, make_trainer, pass_rate, quiet_tq, run_step  # noqa: E402
from verl_world import make_config as world_config  # noqa: E402

import cobarl.integrations.verl as cv  # noqa: E402
from cobarl.integrations.verl_state import get_state, reset_registry  # noqa: E402
from cobarl.io import STATE_FILE, load_state  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end: real processes (see the README for the quick loop)

COBA = ["trainer.v1.sampler.sampler_kwargs.strategy=coba", "trainer.v1.sampler.sampler_kwargs.max_budget=12",
        "trainer.v1.sampler.sampler_kwargs.prompt_key=index", "trainer.v1.sampler.sampler_kwargs.tau=2.0"]


@pytest.fixture
def world(verl_world):
    return verl_world


@pytest.fixture(autouse=True)
def _fresh_registry():
    reset_registry()
    yield
    reset_registry()


def make_config(world, ckpt, *overrides):
    return world_config(world, ckpt, *COBA, *overrides)


def test_sync_mode_budgets_stats_advantages_checkpoint_and_resume(world, tmp_path):
    quiet_tq()
    cfg = make_config(world, tmp_path / "ckpt")
    trainer, spy = make_trainer(world, cfg)
    assert isinstance(trainer.replay_buffer, cv.CobaReplayBuffer) and isinstance(trainer.checkpoint_callback, cv.CobaCheckpointCallback)
    state = get_state("default")
    adv_checked = False
    for step in (1, 2):
        # the advantage verl computes in its own step, captured from TransferQueue before cleanup
        captured = {}
        compute = trainer._compute_advantage

        def capture(batch, metrics, compute=compute):
            out = compute(batch, metrics)
            data = tq.kv_batch_get(keys=out.keys, partition_id=out.partition_id, select_fields=["advantages", "rm_scores", "uid", "response_mask"])
            captured.update(keys=out.keys, tags=out.tags, data=data)
            return out

        trainer._compute_advantage = capture
        batch, metrics = run_step(trainer)
        trainer._compute_advantage = compute
        k, total, per_worker = spy.batches[-1]
        assert (k, total) == (8, 32)  # train_batch_size x rollout.n
        assert max(per_worker) - min(per_worker) <= cfg.trainer.v1.sampler.sampler_kwargs.max_budget
        real = [not t.get("is_padding", False) for t in captured["tags"]]
        assert sum(real) == 32 and len(batch.keys) % 4 == 0  # verl padded to its multiple
        # one statistics update per step, metrics reach verl's step metrics under the TRL names
        assert state.steps == step and metrics["budget/total"] == 32 and metrics["rollout/count"] == 32
        for key in ("capability/alpha", "capability/beta", "capability/failure_rate", "rollout/effective_ratio", "budget/mean"):
            assert key in metrics, key
        # advantages: verl's grpo on the same rows, grouped by uid, sizes vary from step 2 on
        uids = np.array([str(u) for u in captured["data"]["uid"]], dtype=object)
        scores = captured["data"]["rm_scores"].to_padded_tensor(0.0)
        mask = captured["data"]["response_mask"].to_padded_tensor(0).float()
        adv = captured["data"]["advantages"].to_padded_tensor(0.0)
        ref, _ = core_algos.compute_grpo_outcome_advantage(scores[torch.tensor(real)], mask[torch.tensor(real)], uids[np.array(real)])
        assert torch.allclose(adv[torch.tensor(real)], ref, atol=1e-6)
        sizes = set(np.unique(uids[np.array(real)], return_counts=True)[1].tolist())
        adv_checked |= len(sizes) > 1
        # checkpoint: verl's folder has cobarl's state, equal to the live state
        step_dir = tmp_path / "ckpt" / f"global_step_{step}"
        saved = load_state(step_dir)
        assert saved is not None and saved["allocator"] == state.allocator.state_dict()
    assert adv_checked, "the statistics never made the groups differ in size"
    rates = state.allocator.pass_rates(list(range(N_PROMPTS)))
    seen = state.allocator.seen(list(range(N_PROMPTS)))
    truth = np.array([pass_rate(i) for i in range(N_PROMPTS)])
    assert np.abs(rates[seen] - truth[seen]).mean() < 0.3  # the stub model's rates are learned
    plan_before = state.plan(["x1", "x2", "x3"], [0, 1, 2], 4).rollout_n.tolist()
    saved_state = state.allocator.state_dict()

    # resume: a fresh process (registry) rebuilds the trainer from the same folder
    reset_registry()
    quiet_tq()
    trainer2, _ = make_trainer(world, cfg)
    assert trainer2.global_steps == 2 and get_state("default").restored_from.endswith("global_step_2")
    assert get_state("default").allocator.state_dict() == saved_state
    assert get_state("default").plan(["x1", "x2", "x3"], [0, 1, 2], 4).rollout_n.tolist() == plan_before

    # a checkpoint verl considers complete but without cobarl's state: refused with the fix
    reset_registry()
    (tmp_path / "ckpt" / "global_step_2" / STATE_FILE).unlink()
    with pytest.raises(RuntimeError, match="missing_state=fresh"):
        get_trainer_cls("sync")(config=cfg)


def test_crash_between_verl_marker_and_callback_keeps_state(world, tmp_path):
    """verl writes latest_checkpointed_iteration.txt before on_save: the state must already be there."""
    quiet_tq()
    cfg = make_config(world, tmp_path / "ckpt")
    trainer, _ = make_trainer(world, cfg)
    trainer.checkpoint_callback = CheckpointCallback(config=cfg)  # on_save never runs (the crash)
    run_step(trainer)
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "1"
    assert load_state(tmp_path / "ckpt" / "global_step_1")["allocator"] == get_state("default").allocator.state_dict()


def test_async_mode_one_update_per_step_dapo_refills_and_small_batches(world, tmp_path):
    """separate_async, parameter_sync_step=2 (two sample() calls per step), DAPO filter on: prompts with
    pass rate 0 or 1 come back all-equal, are evicted and refilled one at a time."""
    quiet_tq()
    cfg = make_config(
        world, tmp_path / "ckpt",
        "trainer.v1.trainer_mode=separate_async", "trainer.v1.sampler.custom_sampler.name=CobaReplayBufferAsync",
        "trainer.v1.separate_async.parameter_sync_step=2", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.rollout.nnodes=1", "actor_rollout_ref.rollout.n_gpus_per_node=1",
        "actor_rollout_ref.rollout.checkpoint_engine.backend=nccl",
        "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc", "trainer.save_freq=-1",
    )
    trainer, spy = make_trainer(world, cfg)
    assert isinstance(trainer.replay_buffer, cv.CobaReplayBufferAsync)
    assert trainer.replay_buffer.filter_groups_metric == "acc"  # verl's DAPO filter reached cobarl's buffer
    from verl.trainer.ppo.v1.trainer_separate_async import HybridEngineMode

    trainer.current_mode = HybridEngineMode.TRAINER
    trainer._add_async_warmup_batches(1)
    state = get_state("default")
    trained, generated = [], []
    for step in (1, 2):
        _, metrics = run_step(trainer)
        assert state.steps == step  # one statistics update per step despite two sample() calls
        assert "capability/alpha" in metrics and metrics["rollout/count"] >= 32
        trained.append(metrics["rollout/trained"])
        generated.append(metrics["rollout/count"])
        assert metrics["rollout/trained"] <= metrics["rollout/count"]
    sizes = [(k, total) for k, total, _ in spy.batches]
    assert all(total == 4 * k for k, total in sizes), sizes  # every batch, any size: k x rollout.n
    assert any(k < 8 for k, _ in sizes), sizes  # small refills happened (DAPO evictions)
    assert all(t > 0 for t in trained) and sum(trained) < sum(generated)  # evicted groups: observed, not trained
    # DAPO-filtered groups still count: prompts the stub always solves are known to be solved
    solved = [i for i in range(N_PROMPTS) if pass_rate(i) == 1.0 and state.allocator.seen([i])[0]]
    assert solved and np.all(state.allocator.pass_rates(solved) == 1.0)
