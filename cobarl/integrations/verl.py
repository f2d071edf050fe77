"""CoBA-RL and every cobarl rollout policy on verl >= 0.9 (V1 trainer) with configuration only: no fork,
no new entry point.

Three classes, each loaded by verl from a config key (verl 0.9.1 names); all three are required and
checked when verl builds the replay buffer (``PPOTrainer.__init__``, before any model is loaded,
:func:`cobarl.integrations.verl_config.check_config`):

============================  =====================================================================
``CobaReplayBuffer`` /        ``trainer.v1.sampler.custom_sampler.{path,name}`` (built by
``CobaReplayBufferAsync``     ``PPOTrainer._build_replay_buffer``); subclass verl's ``ReplayBuffer``
                              (``trainer_mode=sync``) / ``ReplayBufferAsync`` (``colocate_async``,
                              ``separate_async``). Creates the shared state (restoring it on resume),
                              checks the configuration, wires ``algorithm.filter_groups`` (DAPO) into
                              verl's own filter, records every finished group it samples or evicts and
                              flushes the step's statistics and metrics once per training step (after the
                              step's last ``sample()``) into verl's step metrics.
``CobaAgentLoopManager``      ``actor_rollout_ref.rollout.agent.agent_loop_manager_class``; subclasses
                              ``AgentLoopManagerTQ``. For an allocator, every generation batch of k prompts
                              gets exactly ``k * rollout.n`` rollouts, per prompt in the ``__rollout_n__``
                              column, balanced over the workers. For Reinforce-Ada and PODS it installs
                              :data:`~cobarl.integrations.verl_rounds.CobaAgentLoopWorker` (rounds per
                              prompt inside the workers); for GRESO it runs the step itself
                              (:mod:`cobarl.integrations.verl_stream`, ``sync`` only).
``CobaCheckpointCallback``    ``trainer.checkpoint_callback_class``; ``on_save`` (re)writes
                              ``cobarl_state.json`` into the ``global_step_N`` folder. The buffer already
                              wrote it before verl marks the checkpoint complete.
============================  =====================================================================

Advantages: verl's own ``algorithm.adv_estimator=grpo`` (groups by ``uid``, any size, final output per
session), or, for Reinforce-Ada, ``cobarl_pool_baseline`` (registered by
:mod:`cobarl.integrations.verl_rounds`). Options live in ``trainer.v1.sampler.sampler_kwargs``; see
``docs/verl.md`` and ``examples/verl/``. Requires verl ``>=0.9,<0.10`` and TransferQueue.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

import numpy as np

try:
    import ray
    import transfer_queue as tq
    from tensordict import TensorDict
    from verl.trainer.ppo.checkpoint_callback import CheckpointCallback
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync
    from verl.utils import tensordict_utils as tu
except ImportError as err:  # pragma: no cover - exercised in the venv without verl
    raise ImportError(
        "cobarl.integrations.verl needs verl>=0.9,<0.10 (the V1 trainer) and TransferQueue: "
        f"pip install 'cobarl[verl]'  (import failed: {err})"
    ) from err

from cobarl.integrations.verl_config import (  # noqa: F401  (re-exported: the plugin's public surface)
    CALLBACK_FQN,
    MANAGER_FQN,
    SAMPLER_FOR_MODE,
    SAMPLER_PATH,
    check_config,
    plain,
    restore,
    resume_folder,
    select,
    settings_from_config,
)
from cobarl.integrations.verl_plan import (  # noqa: F401
    ROLLOUT_N_KEY,
    RolloutPlan,
    balance_workers,
    parse_settings,
    prompt_ids_from_batch,
    session_rewards,
    verl_runner,
)
from cobarl.integrations.verl_rounds import ERROR_TAG, TAG, CobaAgentLoopWorker
from cobarl.integrations.verl_state import POOL_BASELINES, SUMMARY_FILE, GroupRecord, SharedState, get_state  # noqa: F401
from cobarl.integrations.verl_stream import run_trainer_step
from cobarl.io import save_state, write_json

logger = logging.getLogger(__name__)

__all__ = [
    "CobaAgentLoopManager",
    "CobaCheckpointCallback",
    "CobaReplayBuffer",
    "CobaReplayBufferAsync",
    "check_config",
    "resume_folder",
    "settings_from_config",
]


# 1. replay buffer: start-up, DAPO wiring, one statistics update per step ------------------------------------
class _CobaSamplingMixin:
    """What cobarl adds to verl's ``ReplayBuffer`` / ``ReplayBufferAsync``."""

    def __init__(self, *args, refill_fn=None, **kwargs):
        trainer = getattr(refill_fn, "__self__", None)
        config = getattr(trainer, "config", None)
        if config is None:
            raise TypeError(
                f"{type(self).__name__} must be built by verl's PPOTrainer._build_replay_buffer "
                "(it reads the trainer's configuration through refill_fn=trainer._add_prompts_to_generate)"
            )
        settings = parse_settings(plain(kwargs.get("sampler_kwargs") or {}))
        check_config(config, settings)
        kwargs.update(self._verl_filter_kwargs(trainer, config, kwargs.get("trainer_mode", "sync")))
        super().__init__(*args, refill_fn=refill_fn, **kwargs)
        self.cobarl_settings = settings
        self.cobarl_trainer = trainer
        self.cobarl_runner = verl_runner(settings.strategy.policy)
        self.cobarl = get_state(settings.name, settings)
        self.cobarl.trainer = trainer  # a trainer-side step (GRESO) draws its prompts from the trainer's dataset
        self.cobarl_samples_per_step = int(getattr(trainer, "parameter_sync_step", 1) or 1)
        self._cobarl_calls: Counter[int] = Counter()
        self._cobarl_baselines: list[str] = []  # uids whose pool baselines this buffer published
        restore(self.cobarl, config)

    def _verl_filter_kwargs(self, trainer, config, mode: str) -> dict[str, Any]:
        """The filter arguments verl gives its own buffer but not a custom one (verl 0.9.1
        ``PPOTrainer._build_replay_buffer``): DAPO ``filter_groups`` and ``sync_refill_failed_groups``."""
        out: dict[str, Any] = {}
        metric = trainer._resolve_filter_groups_metric()  # verl's own check that the metric exists when sampling
        refill_failed = bool(config.trainer.v1.sampler.get("sync_refill_failed_groups", False))
        out.update(filter_groups_metric=metric, sync_refill_failed_groups=refill_failed)
        if mode == "sync":
            max_inflight = config.algorithm.filter_groups.get("max_inflight_gen_batches", 1) if metric is not None else 1
            train_batch_size = config.data.train_batch_size
            gen_batch_size = 1 if metric is not None or refill_failed else (config.data.get("gen_batch_size", None) or train_batch_size)
            out.update(train_batch_size=train_batch_size, gen_batch_size=gen_batch_size, max_inflight_gen_batches=max_inflight)
        return out

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        if partition_id == "train" and not self._cobarl_calls[global_steps]:
            for uid in self._cobarl_baselines:  # the previous steps' advantages are computed
                POOL_BASELINES.pop(uid, None)
            self._cobarl_baselines = []
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id != "train":
            return batch, metrics
        self._cobarl_record(batch.keys, batch.tags, batch.partition_id)
        self._cobarl_calls[global_steps] += 1
        if self._cobarl_calls[global_steps] >= self.cobarl_samples_per_step:
            # the step's last sample(): one statistics and capability update, metrics into this step's log
            metrics.update(self.cobarl.flush())
            for old in [s for s in self._cobarl_calls if s < global_steps]:
                del self._cobarl_calls[old]
            self._cobarl_presave(global_steps)
            folder = self.cobarl_trainer.config.trainer.default_local_dir  # what the run spent, next to its checkpoints
            os.makedirs(folder, exist_ok=True)
            write_json(os.path.join(folder, SUMMARY_FILE), self.cobarl.summary(), indent=1)
        return batch, metrics

    def _cobarl_record(self, keys, tags, partition_id: str, trained: bool = True) -> None:
        """Finished trajectories -> this step's records (``trained``: sampled into the batch; False for groups
        verl drops). A trainer-side step (GRESO) recorded its groups itself."""
        real = [(k, tag or {}) for k, tag in zip(keys, tags) if not (tag or {}).get("is_padding", False)]
        if not real or self.cobarl_runner == "trainer":
            return
        if self.cobarl_runner == "worker":
            return self._cobarl_record_groups(real, trained)
        keys = [k for k, _ in real]
        data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["rm_scores"])
        rewards = [float(score.sum().item()) for score in data["rm_scores"]]
        uids, r = session_rewards(keys, rewards)
        self.cobarl.add(uids, r, trained=trained, tokens=sum(int(tag.get("response_len", 0)) for _, tag in real))

    def _cobarl_record_groups(self, real: list, trained: bool) -> None:
        """Groups the agent-loop workers generated in rounds: their accounting travels in each row's tag;
        a sampled group's pool baseline is published for the advantage estimator."""
        groups, untagged = {}, []
        for key, tag in real:
            uid = key.split("_")[0]
            if TAG not in tag:
                untagged.append(uid)  # generated without the plugin's rounds: counted as rollout/unplanned
            else:
                groups.setdefault(uid, tag[TAG])
        if untagged:
            self.cobarl.add(untagged, np.zeros(len(untagged)), trained=trained)
        records = []
        for uid, g in groups.items():
            rewards = np.asarray(g["rewards"], dtype=np.float64)
            records.append(GroupRecord(uid, rewards, rewards[g["kept"]] if trained else rewards[:0], g["first"], g["rounds"],
                                       g["tokens"], g["extra"]))
            if trained and g["baseline"] is not None:
                POOL_BASELINES[uid] = tuple(g["baseline"])
                self._cobarl_baselines.append(uid)
        self.cobarl.record(records)

    def _clear_groups(self, partition_id: str, uids: set[str]) -> None:
        # Finished groups verl drops (DAPO-filtered, stale, surplus) are outcomes of the plan too: a
        # DAPO-filtered all-correct group is exactly how a prompt's pass rate reaches 1. Record them first.
        if partition_id == "train" and uids:
            finished = set(uids) & self.finished_keys[partition_id]
            keys = [key for key in self.partitions[partition_id] if key.split("_")[0] in finished]
            self._cobarl_record(keys, [self.partitions[partition_id][k] for k in keys], partition_id, trained=False)
            self.cobarl.forget(uids)
        super()._clear_groups(partition_id, uids)

    def _sync_metadata_from_transfer_queue(self):
        super()._sync_metadata_from_transfer_queue()
        if self.cobarl_runner == "worker" and self.failure_keys["train"]:  # rare: read the failed prompts' tags
            tags = (tq.kv_list("train") or {}).get("train", {})
            errors = {tags[u][ERROR_TAG] for u in self.failure_keys["train"] if ERROR_TAG in tags.get(u, {})}
            if errors:
                raise RuntimeError(f"cobarl: the rollout policy {self.cobarl_settings.strategy.name} stopped: " + "; ".join(sorted(errors)))

    def _cobarl_presave(self, global_steps: int) -> None:
        """Write cobarl's state into ``global_step_N`` before verl writes ``latest_checkpointed_iteration.txt``.

        verl 0.9.1 saves (``fit``: ``is_last_step or global_steps % save_freq == 0``) right after the step's
        last ``sample()`` and its training, with no plan or observation in between, so this file is exactly
        the state at the checkpoint; the callback rewrites it after the save.
        """
        trainer, cfg = self.cobarl_trainer, self.cobarl_trainer.config.trainer
        total = getattr(trainer, "total_training_steps", None)
        save_freq = int(cfg.get("save_freq", -1) or -1)
        if save_freq <= 0 or not (global_steps % save_freq == 0 or (total is not None and global_steps >= total)):
            return
        folder = os.path.join(cfg.default_local_dir, f"global_step_{global_steps}")
        save_state(folder, self.cobarl.state_dict(global_step=global_steps))


class CobaReplayBuffer(_CobaSamplingMixin, ReplayBuffer):
    """``ReplayBuffer`` (``trainer.v1.trainer_mode=sync``) with cobarl's statistics."""


class CobaReplayBufferAsync(_CobaSamplingMixin, ReplayBufferAsync):
    """``ReplayBufferAsync`` (``colocate_async`` / ``separate_async``) with cobarl's statistics."""


# 2. agent-loop manager: plan, write __rollout_n__, balance workers ------------------------------------------
class CobaAgentLoopManager(AgentLoopManagerTQ):
    """``AgentLoopManagerTQ`` that gives every generation batch of k prompts ``k * rollout.n`` rollouts,
    split per prompt by the shared allocator, and balances the workers' rollout totals; for the other
    policies, installs the rounds worker or runs a trainer-side step (see the module docstring).

    Validation batches (``validate=True``) pass through unchanged (``val_kwargs.n`` applies).
    """

    def __init__(self, config, *args, **kwargs):
        if not select(config, "trainer.use_v1", True):
            raise ValueError(
                "cobarl's verl plugin needs the V1 trainer (trainer.use_v1=true): the legacy RayPPOTrainer repeats "
                "every prompt rollout.n times and ignores __rollout_n__"
            )
        super().__init__(config, *args, **kwargs)
        self.cobarl_settings = settings_from_config(config)
        self.cobarl_runner = verl_runner(self.cobarl_settings.strategy.policy)
        if self.cobarl_runner == "worker":  # rounds per prompt inside the workers (cobarl.integrations.verl_rounds)
            self.agent_loop_workers_class = CobaAgentLoopWorker
        self.cobarl = get_state(self.cobarl_settings.name)  # created (and restored) by cobarl's replay buffer
        self.cobarl_rollout_n = int(config.actor_rollout_ref.rollout.n)
        self.cobarl_direct: list[int] | None = None  # a trainer-side step's rollout counts while it submits a round
        self._cobarl_warned_ids = False

    def prepare_batch(self, prompts: TensorDict) -> tuple[TensorDict, RolloutPlan]:
        """Plan ``prompts`` -> (a copy with ``__rollout_n__``, the plan)."""
        uids = [str(u) for u in prompts["uid"]]
        keys = set(prompts.keys())
        index = list(prompts["index"]) if "index" in keys else None
        raw = list(prompts["raw_prompt"]) if "raw_prompt" in keys else None
        ids, mode = prompt_ids_from_batch(index, raw, self.cobarl_settings.prompt_key)
        if mode != self.cobarl_settings.prompt_key and not self._cobarl_warned_ids:
            logger.warning("cobarl: the batch's `index` column is missing or constant; prompts are identified by content")
            self._cobarl_warned_ids = True
        if ROLLOUT_N_KEY in keys:
            logger.warning("cobarl: overriding the dataset's %s column", ROLLOUT_N_KEY)
        plan = self.cobarl.plan(uids, ids, self.cobarl_rollout_n)
        batch = prompts.copy()  # never mutate the caller's batch (async trainers persist it in TransferQueue)
        tu.assign_non_tensor_stack(batch, ROLLOUT_N_KEY, [int(n) for n in plan.rollout_n])
        return batch, plan

    def generate_sequences(self, prompts: TensorDict) -> None:
        if bool(tu.get_non_tensor_data(prompts, "validate", False)):
            return super().generate_sequences(prompts)
        if self.cobarl_runner == "trainer" and self.cobarl_direct is None:
            return run_trainer_step(self, prompts)
        if self.cobarl_runner in ("plan", "verl"):
            batch, plan = self.prepare_batch(prompts)
            self.dispatch(batch, plan.rollout_n)
        else:  # the counts a trainer-side step asked for, or rollout.n per prompt (what each trains, in rounds)
            self.dispatch(prompts, self.cobarl_direct or [self.cobarl_rollout_n] * len(prompts))

    def dispatch(self, batch: TensorDict, counts) -> None:
        """Send the rows to the agent-loop workers, balanced by their rollout counts."""
        parts = balance_workers(counts, len(self.agent_loop_workers))
        ray.get([
            worker.generate_sequences.remote(tu.index_select_tensor_dict(batch, rows.tolist()))
            for worker, rows in zip(self.agent_loop_workers, parts)
            if rows.size
        ])


# 3. checkpoints -----------------------------------------------------------------------------------------
class CobaCheckpointCallback(CheckpointCallback):
    """(Re)writes the shared state to ``<global_step_N>/cobarl_state.json`` after each verl checkpoint
    (``CheckpointCallback.on_save(trainer, global_step, checkpoint_dir, async_save=False, **kwargs)``)."""

    def on_save(self, trainer, global_step: int, checkpoint_dir: str, async_save: bool = False, **kwargs) -> None:
        state = get_state(settings_from_config(self.config).name)
        save_state(checkpoint_dir, state.state_dict(global_step=global_step))
