"""cobarl's verl plugin against REAL verl 0.9 components on CPU.

Real: a local Ray (``num_cpus=2``), TransferQueue (one SimpleStorage unit), verl's trainers built by
their own ``__init__`` (so ``build_checkpoint_callback`` and ``_build_replay_buffer`` build cobarl's
classes from the example config), ``RLHFDataset`` + dataloader on a tiny local Qwen2 tokenizer,
``CobaAgentLoopManager.create`` starting two ``AgentLoopWorkerTQ`` Ray actors that run verl's
``SingleTurnAgentLoop``, and the trainer's own ``step()`` (sampling, DAPO filtering and refills,
``_balance_batch`` padding, ``_compute_advantage``) and ``_save_checkpoint`` / ``_load_checkpoint``.

Fakes, and why: the LLM server client (no vLLM/SGLang on CPU) answers "1" (reward 1) or "0" with a
per-prompt probability; the reward worker scores that token; the actor worker group (FSDP training
needs GPUs) only records calls and checkpoint paths; ``checkpoint_manager`` weight syncs are no-ops.
"""

import asyncio
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

import pandas as pd  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
import transfer_queue as tq  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.checkpoint_callback import CheckpointCallback  # noqa: E402
from verl.trainer.ppo.v1 import get_trainer_cls  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

import cobarl.integrations.verl as cv  # noqa: E402
from cobarl.integrations.verl_plan import STATE_FILE, get_state, reset_registry  # noqa: E402
from cobarl.io import load_state  # noqa: E402
from cobarl.models.tiny import build_model, build_tokenizer  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end: real processes (see the README for the quick loop)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "verl"
N_PROMPTS = 8  # = train_batch_size: every step after the first sees known prompts


def pass_rate(index: int) -> float:
    """Stub model's chance to answer prompt ``index`` right: 0, 1/3, 2/3 or 1."""
    return (index % 4) / 3


class StubLLM:
    """Stands in for verl's ``LLMServerClient``: ``generate`` returns token "1" (right) or "0"."""

    def __init__(self, one_id, zero_id, eos_id, index_of_prompt):
        self.one_id, self.zero_id, self.eos_id = one_id, zero_id, eos_id
        self.index_of_prompt = index_of_prompt  # tuple(prompt_ids) -> dataset index

    async def generate(self, request_id, prompt_ids, sampling_params, **kwargs):
        await asyncio.sleep(0)
        p = pass_rate(self.index_of_prompt[tuple(int(t) for t in prompt_ids)])
        tok = self.one_id if random.random() < p else self.zero_id
        return TokenOutput(token_ids=[tok, self.eos_id], log_probs=[-0.5, -0.1], num_preempted=0, extra_fields={})


@ray.remote
class StubRewardWorker:
    """Stands in for verl's ``RewardLoopWorker``: reward 1.0 when the response starts with "1"."""

    def __init__(self, one_id):
        self.one_id = one_id

    async def compute_score(self, data):
        r = float(int(data.batch["responses"][0][0]) == self.one_id)
        return {"reward_score": r, "reward_extra_info": {"acc": r}}


class StubActorWG:
    """The actor worker group's surface ``PPOTrainer.step`` / checkpointing touch (FSDP needs GPUs)."""

    def __init__(self):
        self._dispatch_info = {"actor": [0, 1]}  # dp size 2
        self.saved, self.loaded, self.updates = [], [], []

    def update_actor(self, batch):
        self.updates.append(len(batch))
        return {"metrics": {"mfu": [0.0]}}

    def save_checkpoint(self, local_path, *args, **kwargs):
        Path(local_path).mkdir(parents=True, exist_ok=True)
        self.saved.append(local_path)

    def load_checkpoint(self, local_path, **kwargs):
        self.loaded.append(local_path)


class NoopCheckpointManager:
    def __getattr__(self, name):
        return lambda *a, **k: {}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Ray, TransferQueue, a tiny model/tokenizer, the data and the stub reward worker (once per module)."""
    tmp = tmp_path_factory.mktemp("verl_real")
    tok = build_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
    build_model(tok, seed=0).save_pretrained(tmp / "model")
    tok.save_pretrained(tmp / "model")
    rows = [{"data_source": "cobarl_stub", "prompt": [{"role": "user", "content": f"{i}+{i + 1}"}],
             "reward_model": {"ground_truth": "1", "style": "rule"}, "extra_info": {"index": i}} for i in range(N_PROMPTS)]
    pd.DataFrame(rows).to_parquet(tmp / "train.parquet")
    index_of_prompt = {tuple(tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True,
                                                     return_dict=False)): i for i, r in enumerate(rows)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tq.init(OmegaConf.create({"enable": True, "backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    ids = tok.convert_tokens_to_ids(["1", "0"])
    llm = StubLLM(ids[0], ids[1], tok.eos_token_id, index_of_prompt)
    reward = StubRewardWorker.remote(ids[0])
    yield SimpleNamespace(tmp=tmp, llm=llm, reward=reward, one_id=ids[0], workers=None)
    tq.close()
    ray.shutdown()


@pytest.fixture(autouse=True)
def _fresh_registry():
    reset_registry()
    yield
    reset_registry()


def make_config(world, ckpt, *overrides):
    base = [
        f"actor_rollout_ref.model.path={world.tmp / 'model'}",
        f"data.train_files={world.tmp / 'train.parquet'}",
        f"data.val_files={world.tmp / 'train.parquet'}",
        "data.max_prompt_length=16", "data.max_response_length=4", "data.truncation=error", "data.dataloader_num_workers=0",
        "data.train_batch_size=8", "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.rollout.agent.num_workers=2", "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.calculate_log_probs=true", "algorithm.rollout_correction.bypass_mode=true",
        "trainer.n_gpus_per_node=2", "trainer.device=cpu", "trainer.logger=[console]",
        f"trainer.default_local_dir={ckpt}", "trainer.save_freq=1", "trainer.total_training_steps=3",
        "trainer.v1.sampler.sampler_kwargs.strategy=coba", "trainer.v1.sampler.sampler_kwargs.max_budget=12",
        "trainer.v1.sampler.sampler_kwargs.prompt_key=index", "trainer.v1.sampler.sampler_kwargs.tau=2.0",
    ]
    with initialize_config_dir(config_dir=str(EXAMPLES), version_base=None):
        cfg = compose(config_name="coba_dapo_qwen2.5_7b", overrides=base + list(overrides))
    cfg.transfer_queue.enable = True
    OmegaConf.resolve(cfg)
    return cfg


class Spy:
    """Records every generation batch the manager plans: (k prompts, total, per-worker totals)."""

    def __init__(self, manager):
        self.batches = []
        plan_fn, workers = manager.prepare_batch, manager.agent_loop_workers

        def prepare_batch(prompts):
            batch, plan = plan_fn(prompts)
            parts = cv.balance_workers(plan.rollout_n, len(workers))
            self.batches.append((len(prompts), plan.total, [int(plan.rollout_n[p].sum()) for p in parts]))
            return batch, plan

        manager.prepare_batch = prepare_batch


def make_trainer(world, cfg):
    """verl's trainer for ``cfg`` (its __init__ builds cobarl's callback and buffer) + a real manager."""
    trainer = get_trainer_cls(cfg.trainer.v1.trainer_mode)(config=cfg)
    trainer.replay_buffer.poll_interval = 0.2
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer.actor_rollout_wg = StubActorWG()
    trainer.checkpoint_manager = NoopCheckpointManager()
    trainer.reward_loop_manager = SimpleNamespace(reward_loop_worker_handles=[world.reward])
    trainer.use_reference_policy = False
    trainer.curr_step_profile = False  # set by fit()
    trainer._load_checkpoint()
    kwargs = dict(config=cfg, llm_client=world.llm, teacher_client=None, reward_loop_worker_handles=[world.reward])
    if world.workers is None:  # the first trainer starts two real AgentLoopWorkerTQ actors through create()
        manager = cv.CobaAgentLoopManager.create(**kwargs)
        world.workers = manager.agent_loop_workers
    else:  # later ones reuse them (a worker reads only the rollout/data config, equal in every test)
        manager = cv.CobaAgentLoopManager(**kwargs)
        manager.agent_loop_workers = world.workers
    assert len(manager.agent_loop_workers) == 2
    trainer.agent_loop_manager = manager
    return trainer, Spy(manager)


def run_step(trainer):
    trainer.global_steps += 1
    trainer.timing_raw = {}
    trainer.on_step_begin()
    metrics = {}
    batch = trainer.step(metrics, trainer.timing_raw)
    if trainer.config.trainer.save_freq > 0 and trainer.global_steps % trainer.config.trainer.save_freq == 0:
        trainer._save_checkpoint()
    tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)
    return batch, metrics


def clear_tq():
    for pid, items in (tq.kv_list() or {}).items():
        if items:
            tq.kv_clear(keys=list(items), partition_id=pid)


def test_sync_mode_budgets_stats_advantages_checkpoint_and_resume(world, tmp_path):
    clear_tq()
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
    clear_tq()
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
    clear_tq()
    cfg = make_config(world, tmp_path / "ckpt")
    trainer, _ = make_trainer(world, cfg)
    trainer.checkpoint_callback = CheckpointCallback(config=cfg)  # on_save never runs (the crash)
    run_step(trainer)
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "1"
    assert load_state(tmp_path / "ckpt" / "global_step_1")["allocator"] == get_state("default").allocator.state_dict()


def test_async_mode_one_update_per_step_dapo_refills_and_small_batches(world, tmp_path):
    """separate_async, parameter_sync_step=2 (two sample() calls per step), DAPO filter on: prompts with
    pass rate 0 or 1 come back all-equal, are evicted and refilled one at a time."""
    clear_tq()
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
