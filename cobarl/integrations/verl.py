"""CoBA-RL on verl >= 0.9 (V1 trainer) with configuration only: no fork, no new entry point.

Three classes, each loaded by verl from a config key (verl 0.9.1 names); all three are required and
checked when verl builds the replay buffer (``PPOTrainer.__init__``, before any model is loaded):

============================  =====================================================================
``CobaReplayBuffer`` /        ``trainer.v1.sampler.custom_sampler.{path,name}`` (built by
``CobaReplayBufferAsync``     ``PPOTrainer._build_replay_buffer``); subclass verl's ``ReplayBuffer``
                              (``trainer_mode=sync``) / ``ReplayBufferAsync`` (``colocate_async``,
                              ``separate_async``). Creates the shared allocator (restoring it on resume),
                              checks the configuration, wires ``algorithm.filter_groups`` (DAPO) into
                              verl's own filter, records every finished group it samples or evicts and
                              updates the statistics once per training step (after the step's last
                              ``sample()``), returning the cobarl metrics into verl's step metrics.
``CobaAgentLoopManager``      ``actor_rollout_ref.rollout.agent.agent_loop_manager_class``; subclasses
                              ``AgentLoopManagerTQ``. Every generation batch of k prompts (training
                              batch, DAPO refill, async top-up, re-issue on resume) gets exactly
                              ``k * rollout.n`` rollouts, written per prompt into the ``__rollout_n__``
                              column that ``AgentLoopWorkerTQ._run_prompt`` pops, and the prompts are
                              spread over the agent-loop workers so their rollout totals differ by at most
                              one prompt's budget.
``CobaCheckpointCallback``    ``trainer.checkpoint_callback_class``; ``on_save`` (re)writes
                              ``cobarl_state.json`` into the ``global_step_N`` folder. The buffer already
                              wrote it before verl marks the checkpoint complete.
============================  =====================================================================

Advantages: use verl's own ``algorithm.adv_estimator=grpo``. It groups by ``uid`` with a dict (any
group size) and, in the V1 trainer, scores each session by its final output; with ``min_budget >= 2``
no planned group has one member. Options live in ``trainer.v1.sampler.sampler_kwargs``; see
``docs/verl.md`` and ``examples/verl/``. Requires verl ``>=0.9,<0.10`` and TransferQueue.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any


try:
    import ray
    import transfer_queue as tq
    from tensordict import TensorDict
    from verl.trainer.ppo.checkpoint_callback import CheckpointCallback
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync
    from verl.utils import tensordict_utils as tu
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path
except ImportError as err:  # pragma: no cover - exercised in the venv without verl
    raise ImportError(
        "cobarl.integrations.verl needs verl>=0.9,<0.10 (the V1 trainer) and TransferQueue: "
        f"pip install 'cobarl[verl]'  (import failed: {err})"
    ) from err

from cobarl.io import load_state, save_state
from cobarl.integrations.verl_plan import (
    ROLLOUT_N_KEY,
    PluginSettings,
    RolloutPlan,
    SharedState,
    balance_workers,
    check_rollout_n,
    plan_options,
    get_state,
    parse_settings,
    prompt_ids_from_batch,
    session_rewards,
)

logger = logging.getLogger(__name__)

MANAGER_FQN = "cobarl.integrations.verl.CobaAgentLoopManager"
CALLBACK_FQN = "cobarl.integrations.verl.CobaCheckpointCallback"
SAMPLER_PATH = "pkg://cobarl.integrations.verl"
SAMPLER_FOR_MODE = {"sync": "CobaReplayBuffer", "colocate_async": "CobaReplayBufferAsync", "separate_async": "CobaReplayBufferAsync"}

__all__ = [
    "CobaAgentLoopManager",
    "CobaCheckpointCallback",
    "CobaReplayBuffer",
    "CobaReplayBufferAsync",
    "check_config",
    "resume_folder",
    "settings_from_config",
]


def _plain(cfg: Any) -> Any:
    """A DictConfig (or anything mapping-like) as plain Python containers."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


def _select(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        node = node.get(part, None) if hasattr(node, "get") else getattr(node, part, None)
    return default if node is None else node


def settings_from_config(config: Any) -> PluginSettings:
    """Plugin settings from the full verl config (``trainer.v1.sampler.sampler_kwargs``)."""
    return parse_settings(_plain(_select(config, "trainer.v1.sampler.sampler_kwargs") or {}))


# start-up checks and resume -------------------------------------------------------------------------------
def check_config(config: Any, settings: PluginSettings) -> None:
    """Refuse, with the fix, every configuration the plugin would silently get wrong."""
    mode = _select(config, "trainer.v1.trainer_mode", "sync")
    problems = []
    if mode not in SAMPLER_FOR_MODE:
        problems.append(f"trainer.v1.trainer_mode={mode!r} is not supported (supported: {', '.join(SAMPLER_FOR_MODE)})")
    else:
        want = SAMPLER_FOR_MODE[mode]
        if _select(config, "trainer.v1.sampler.custom_sampler.name") != want:
            problems.append(f"trainer.v1.sampler.custom_sampler.name must be {want} for trainer_mode={mode}")
    if _select(config, "actor_rollout_ref.rollout.agent.agent_loop_manager_class") != MANAGER_FQN:
        problems.append(f"actor_rollout_ref.rollout.agent.agent_loop_manager_class must be {MANAGER_FQN} (it writes __rollout_n__)")
    if _select(config, "trainer.checkpoint_callback_class") != CALLBACK_FQN:
        problems.append(f"trainer.checkpoint_callback_class must be {CALLBACK_FQN} (cobarl's statistics are part of each checkpoint)")
    reward_model = _select(config, "reward.reward_model")
    if reward_model is not None and reward_model.get("enable", False) and not reward_model.get("enable_resource_pool", False):
        problems.append(
            "a colocated reward model scores only after replay-buffer sampling; cobarl (like DAPO filtering) needs rewards "
            "when it samples: use a rule-based reward or reward.reward_model.enable_resource_pool=true"
        )
    estimator = str(_select(config, "algorithm.adv_estimator", "grpo"))
    if estimator == "cobarl_grpo":
        problems.append(
            "algorithm.adv_estimator=cobarl_grpo was removed: it skipped verl's final-output-per-session selection; "
            "use algorithm.adv_estimator=grpo (verl groups by uid, so per-prompt budgets need nothing else)"
        )
    filter_on = bool(_select(config, "algorithm.filter_groups.enable", False))
    if settings.strategy.policy.verl_native and not filter_on:
        problems.append(
            f"strategy {settings.strategy.name} runs verl's own dynamic sampling (uniform budgets, groups with one reward value evicted and "
            "refilled by verl's replay buffer): set algorithm.filter_groups.enable=true (and algorithm.filter_groups.metric, "
            "e.g. acc)")
    try:
        check_rollout_n(int(config.actor_rollout_ref.rollout.n), plan_options(settings.strategy))
    except ValueError as err:
        problems.append(str(err))
    if problems:
        raise ValueError("cobarl cannot run with this verl configuration:\n  - " + "\n  - ".join(problems))
    if estimator != "grpo":
        logger.warning(
            "cobarl: algorithm.adv_estimator=%s receives groups of different sizes; cobarl is tested with grpo", estimator
        )


def resume_folder(config: Any) -> str | None:
    """The ``global_step_N`` folder verl's ``PPOTrainer._load_checkpoint`` resumes from, or None."""
    trainer = config.trainer
    mode = trainer.get("resume_mode", "auto")
    if mode == "disable":
        return None
    if mode == "resume_path":
        path = trainer.get("resume_from_path")
        return os.path.join(os.getcwd(), path) if path and not os.path.isabs(path) else path
    base = trainer.get("default_local_dir")
    if not base:
        return None
    base = base if os.path.isabs(base) else os.path.join(os.getcwd(), base)
    return find_latest_ckpt_path(base)


def _restore(state: SharedState, config: Any) -> None:
    folder = resume_folder(config)
    if folder is None:
        return
    saved = load_state(folder, missing_ok=True)
    if saved is None:
        if state.settings.missing_state == "fresh":
            logger.warning("cobarl: %s has no cobarl_state.json; statistics start empty (missing_state=fresh)", folder)
            state.restored_from = folder
            return
        raise RuntimeError(
            f"cobarl: verl resumes from {folder}, which has no cobarl_state.json (written without "
            f"{CALLBACK_FQN}, or copied without it), so cobarl's allocator statistics cannot be restored. "
            "Either copy that file into the folder, start the statistics empty with "
            "trainer.v1.sampler.sampler_kwargs.missing_state=fresh, or start over with trainer.resume_mode=disable."
        )
    state.load_state_dict(saved)
    state.restored_from = folder
    logger.info("cobarl: restored allocator statistics from %s", folder)


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
        settings = parse_settings(_plain(kwargs.get("sampler_kwargs") or {}))
        check_config(config, settings)
        kwargs.update(self._verl_filter_kwargs(trainer, config, kwargs.get("trainer_mode", "sync")))
        super().__init__(*args, refill_fn=refill_fn, **kwargs)
        self.cobarl_settings = settings
        self.cobarl_trainer = trainer
        self.cobarl = get_state(settings.name, settings)
        self.cobarl_samples_per_step = int(getattr(trainer, "parameter_sync_step", 1) or 1)
        self._cobarl_calls: Counter[int] = Counter()
        _restore(self.cobarl, config)

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
        return batch, metrics

    def _cobarl_record(self, keys, tags, partition_id: str, trained: bool = True) -> None:
        """Rewards (final output per session) of finished trajectories -> this step's observations
        (``trained``: sampled into the batch; False for groups verl drops)."""
        keys = [k for k, tag in zip(keys, tags) if not (tag or {}).get("is_padding", False)]
        if not keys:
            return
        data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["rm_scores"])
        rewards = [float(score.sum().item()) for score in data["rm_scores"]]
        uids, r = session_rewards(keys, rewards)
        self.cobarl.add(uids, r, trained=trained)

    def _clear_groups(self, partition_id: str, uids: set[str]) -> None:
        # Finished groups verl drops (DAPO-filtered, stale, surplus) are outcomes of the plan too: a
        # DAPO-filtered all-correct group is exactly how a prompt's pass rate reaches 1. Record them first.
        if partition_id == "train" and uids:
            finished = set(uids) & self.finished_keys[partition_id]
            keys = [key for key in self.partitions[partition_id] if key.split("_")[0] in finished]
            self._cobarl_record(keys, [self.partitions[partition_id][k] for k in keys], partition_id, trained=False)
            self.cobarl.forget(uids)
        super()._clear_groups(partition_id, uids)

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
    split per prompt by the shared allocator, and balances the workers' rollout totals.

    Validation batches (``validate=True``) pass through unchanged (``val_kwargs.n`` applies).
    """

    def __init__(self, config, *args, **kwargs):
        if not _select(config, "trainer.use_v1", True):
            raise ValueError(
                "cobarl's verl plugin needs the V1 trainer (trainer.use_v1=true): the legacy RayPPOTrainer repeats "
                "every prompt rollout.n times and ignores __rollout_n__"
            )
        super().__init__(config, *args, **kwargs)
        self.cobarl_settings = settings_from_config(config)
        self.cobarl = get_state(self.cobarl_settings.name)  # created (and restored) by cobarl's replay buffer
        self.cobarl_rollout_n = int(config.actor_rollout_ref.rollout.n)
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
        batch, plan = self.prepare_batch(prompts)
        parts = balance_workers(plan.rollout_n, len(self.agent_loop_workers))
        ray.get([
            worker.generate_sequences.remote(tu.index_select_tensor_dict(batch, rows.tolist()))
            for worker, rows in zip(self.agent_loop_workers, parts)
            if rows.size
        ])


# 3. checkpoints -----------------------------------------------------------------------------------------
class CobaCheckpointCallback(CheckpointCallback):
    """(Re)writes the allocator state to ``<global_step_N>/cobarl_state.json`` after each verl checkpoint
    (``CheckpointCallback.on_save(trainer, global_step, checkpoint_dir, async_save=False, **kwargs)``)."""

    def on_save(self, trainer, global_step: int, checkpoint_dir: str, async_save: bool = False, **kwargs) -> None:
        state = get_state(settings_from_config(self.config).name)
        save_state(checkpoint_dir, state.state_dict(global_step=global_step))
