"""The real-verl test world shared by tests/test_verl_real.py and tests/test_verl_policies.py (one Ray per
session, started by the ``verl_world`` fixture in conftest.py; imported only where verl is installed).

Real: a local Ray (``num_cpus=2``), TransferQueue (one SimpleStorage unit), verl's trainers built by
their own ``__init__`` (so ``build_checkpoint_callback`` and ``_build_replay_buffer`` build cobarl's
classes from the example config), ``RLHFDataset`` + dataloader on a tiny local Qwen2 tokenizer,
``CobaAgentLoopManager.create`` starting real agent-loop worker Ray actors that run verl's
``SingleTurnAgentLoop``, and the trainer's own ``step()`` (sampling, DAPO filtering and refills,
``_balance_batch`` padding, ``_compute_advantage``) and ``_save_checkpoint`` / ``_load_checkpoint``.

Fakes, and why: the LLM server client (no vLLM/SGLang on CPU) answers "1" or "0" with a per-prompt
probability; the reward workers score that token (:class:`StubRewardWorker`) or draw a reward that is
a function of (prompt index, step, session) (:class:`TableRewardWorker`, so another trainer can be fed
the same rewards); the actor worker group (FSDP training needs GPUs) only records calls and checkpoint
paths; ``checkpoint_manager`` weight syncs are no-ops.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import ray
import transfer_queue as tq
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.trainer.ppo.v1 import get_trainer_cls
from verl.workers.rollout.replica import TokenOutput

import cobarl.integrations.verl as cv
from cobarl.models.tiny import build_model, build_tokenizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "verl"
N_PROMPTS = 8  # = train_batch_size: every step after the first sees known prompts


def pass_rate(index: int) -> float:
    """Stub model's chance to answer prompt ``index`` right: 0, 1/3, 2/3 or 1."""
    return (index % 4) / 3


def table_reward(index: int, step: int, session: int) -> float:
    """The reward :class:`TableRewardWorker` gives rollout ``session`` of prompt ``index`` at ``step``: a
    deterministic draw at the prompt's pass rate, so a test can feed the same rewards to another trainer."""
    return float(np.random.default_rng([int(index), int(step), int(session)]).random() < pass_rate(index))


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


@ray.remote
class TableRewardWorker:
    """Stands in for verl's ``RewardLoopWorker``: :func:`table_reward` of the rollout's prompt index, step
    and session id (verl hands the prompt's fields to the reward worker)."""

    async def compute_score(self, data):
        nt = data.non_tensor_batch
        r = table_reward(nt["index"][0], nt["global_steps"][0], nt["session_id"][0])
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


def start(tmp: Path):
    """Ray, TransferQueue, a tiny model/tokenizer, the data and the stub reward workers (a generator:
    the world, then shut down)."""
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
    rewards = {"token": StubRewardWorker.remote(ids[0]), "table": TableRewardWorker.remote()}
    try:
        yield SimpleNamespace(tmp=tmp, llm=llm, rewards=rewards, one_id=ids[0], workers={})
    finally:
        tq.close()
        ray.shutdown()


def make_config(world, ckpt, *overrides, config_name="coba_dapo_qwen2.5_7b"):
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
    ]
    with initialize_config_dir(config_dir=str(EXAMPLES), version_base=None):
        cfg = compose(config_name=config_name, overrides=base + list(overrides))
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


def make_trainer(world, cfg, reward="token"):
    """verl's trainer for ``cfg`` (its __init__ builds cobarl's callback and buffer) + a real manager whose
    agent-loop workers score with ``reward`` (a key of ``world.rewards``)."""
    trainer = get_trainer_cls(cfg.trainer.v1.trainer_mode)(config=cfg)
    trainer.replay_buffer.poll_interval = 0.2
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer.actor_rollout_wg = StubActorWG()
    trainer.checkpoint_manager = NoopCheckpointManager()
    trainer.reward_loop_manager = SimpleNamespace(reward_loop_worker_handles=[world.rewards[reward]])
    trainer.use_reference_policy = False
    trainer.curr_step_profile = False  # set by fit()
    trainer._load_checkpoint()
    kwargs = dict(config=cfg, llm_client=world.llm, teacher_client=None, reward_loop_worker_handles=[world.rewards[reward]])
    manager = cv.CobaAgentLoopManager(**kwargs)
    # Real agent-loop worker actors, started once per (worker class, strategy, reward): a worker reads only the
    # rollout/data config and the strategy, equal in every test that shares them.
    key = (manager.agent_loop_workers_class, cfg.trainer.v1.sampler.sampler_kwargs.strategy, reward)
    if key not in world.workers:
        world.workers[key] = cv.CobaAgentLoopManager.create(**kwargs).agent_loop_workers
    manager.agent_loop_workers = world.workers[key]
    assert len(manager.agent_loop_workers) == 2
    trainer.agent_loop_manager = manager
    return trainer, Spy(manager)


def run_step(trainer):
    """One training step as verl's ``fit`` runs it (step, checkpoint, TransferQueue cleanup)."""
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


def quiet_tq(timeout: float = 30.0) -> None:
    """Clear TransferQueue once no prompt of an earlier test is still generating: the Ray world is shared by
    the session, and an async-mode test's workers may still be writing rows when it returns; a row landing
    in the next test's queue would be that test's (a stale tag, a group's session out of place)."""
    import time

    deadline, empty = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and empty < 3:
        items = {k: t for part in (tq.kv_list() or {}).values() for k, t in part.items()}
        if any(t.get("is_prompt") and t.get("status") in ("pending", "running") for t in items.values()):
            time.sleep(0.2)
            continue
        clear_tq()
        empty = empty + 1 if not items else 0
        time.sleep(0.1)
