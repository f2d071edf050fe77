"""CoBA-RL on verl >= 0.9 (V1 trainer) with configuration only: no fork, no new entry point.

Four classes/functions, each loaded by verl from a config key (verl 0.9.1 names):

============================  =====================================================================
``CobaAgentLoopManager``      ``actor_rollout_ref.rollout.agent.agent_loop_manager_class`` (loaded by
                              ``TaskRunnerV1.init_agent_loop_manager`` in ``verl/trainer/main_ppo.py``);
                              subclasses ``verl.trainer.ppo.v1.agent_loop_tq.AgentLoopManagerTQ`` and,
                              per training batch, writes the ``__rollout_n__`` column that
                              ``AgentLoopWorkerTQ._run_prompt`` pops (``n = prompt.pop("__rollout_n__",
                              config.n)``).
``CobaReplayBuffer`` /        ``trainer.v1.sampler.custom_sampler.{path,name}`` (loaded by
``CobaReplayBufferAsync``     ``PPOTrainer._build_replay_buffer`` in ``verl/trainer/ppo/v1/trainer_base.py``
                              with ``load_extern_type``); subclass ``verl.trainer.ppo.v1.replay_buffer.
                              ReplayBuffer`` (``trainer_mode=sync``) / ``ReplayBufferAsync`` and, after
                              each ``sample(global_steps, partition_id, batch_size)``, feed the sampled
                              groups' rewards (``rm_scores``) to the per-prompt statistics and the
                              capability tracker.
``CobaCheckpointCallback``    ``trainer.checkpoint_callback_class`` (``verl/trainer/ppo/
                              checkpoint_callback.py``); ``on_save`` writes ``cobarl_state.json`` into
                              each ``global_step_N`` folder. On resume, ``CobaAgentLoopManager`` reads it
                              back from the folder verl resumes from.
``cobarl_grpo``               ``algorithm.adv_estimator=cobarl_grpo``, registered with
                              ``verl.trainer.ppo.core_algos.register_adv_est``: GRPO by ``uid`` where a
                              group of one or of equal rewards gets advantage 0 (verl's ``grpo`` gives a
                              singleton its raw reward).
============================  =====================================================================

The three classes share one :class:`~cobarl.integrations.verl_plan.SharedState` through a module-level
registry: they all run in the ``TaskRunnerV1`` Ray actor. Options live in
``trainer.v1.sampler.sampler_kwargs`` (the one config block the replay buffer also receives); see
``docs/verl.md`` and ``examples/verl/``. Requires verl ``>=0.9,<0.10`` and its V1 dependency
TransferQueue; the legacy ``RayPPOTrainer`` path (``trainer.use_v1=false``) is not supported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    import torch
    import transfer_queue as tq
    from tensordict import TensorDict
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.checkpoint_callback import CheckpointCallback
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync
    from verl.utils import tensordict_utils as tu
except ImportError as err:  # pragma: no cover - exercised in the venv without verl
    raise ImportError(
        "cobarl.integrations.verl needs verl>=0.9,<0.10 (the V1 trainer) and TransferQueue: "
        f"pip install 'cobarl[verl]'  (import failed: {err})"
    ) from err

from cobarl.advantages import group_advantages
from cobarl.integrations.verl_plan import (
    ROLLOUT_N_KEY,
    PluginSettings,
    RolloutPlan,
    SharedState,
    batch_total,
    check_divisible,
    get_state,
    load_state,
    parse_settings,
    prompt_ids_from_batch,
    required_multiple,
    resume_dir,
    save_state,
    session_rewards,
)

logger = logging.getLogger(__name__)

ADV_ESTIMATOR = "cobarl_grpo"
CALLBACK_FQN = "cobarl.integrations.verl.CobaCheckpointCallback"

__all__ = [
    "ADV_ESTIMATOR",
    "CobaAgentLoopManager",
    "CobaCheckpointCallback",
    "CobaReplayBuffer",
    "CobaReplayBufferAsync",
    "compute_cobarl_grpo_advantage",
    "settings_from_config",
]


def _plain(cfg: Any) -> Any:
    """A DictConfig (or anything mapping-like) as plain Python containers."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


def settings_from_config(config: Any) -> PluginSettings:
    """Plugin settings from the full verl config (``trainer.v1.sampler.sampler_kwargs``)."""
    sampler = config.trainer.v1.sampler
    return parse_settings(_plain(sampler.get("sampler_kwargs", None) or {}))


def _select(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        node = node.get(part, None) if hasattr(node, "get") else getattr(node, part, None)
    return default if node is None else node


# 1. agent-loop manager: plan and write __rollout_n__ -----------------------------------------------------
class CobaAgentLoopManager(AgentLoopManagerTQ):
    """``AgentLoopManagerTQ`` that allocates each training batch's rollouts per prompt.

    ``generate_sequences(prompts)`` (verl 0.9: ``AgentLoopManagerTQ.generate_sequences(self, prompts:
    TensorDict) -> None``) plans ``num_prompts * rollout.n`` rollouts with the shared allocator, drops
    rows planned 0 (marking their TransferQueue prompt entry ``finished`` so the replay buffer does not
    wait for them), adds ``__rollout_n__`` and dispatches the rest. Validation batches
    (``validate=True``) pass through unchanged.
    """

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.cobarl_settings = settings_from_config(config)
        self.cobarl = _setup_state(config, self.cobarl_settings)
        self.cobarl_rollout_n = int(config.actor_rollout_ref.rollout.n)
        self.cobarl_multiple = self.cobarl_settings.divisor or required_multiple(
            int(_select(config, "trainer.n_gpus_per_node", 1)) * int(_select(config, "trainer.nnodes", 1)),
            ppo_mini_batch_size=_select(config, "actor_rollout_ref.actor.ppo_mini_batch_size"),
            rollout_n=self.cobarl_rollout_n,
        )
        check_divisible(int(config.data.train_batch_size), self.cobarl_rollout_n, self.cobarl_multiple)
        self._cobarl_warned_ids = False

    def prepare_batch(self, prompts: TensorDict) -> tuple[TensorDict, RolloutPlan, list[str]]:
        """Plan ``prompts`` (a training batch) -> (rows to generate with ``__rollout_n__``, plan, dropped uids)."""
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
        total = batch_total(len(uids), self.cobarl_rollout_n, self.cobarl_multiple)
        plan = self.cobarl.plan(uids, ids, total)
        kept = np.flatnonzero(plan.kept)
        # never mutate the caller's batch (async trainers persist it in TransferQueue for re-issue)
        batch = prompts.copy() if kept.size == len(uids) else tu.index_select_tensor_dict(prompts, kept.tolist())
        tu.assign_non_tensor_stack(batch, ROLLOUT_N_KEY, [int(n) for n in plan.rollout_n[kept]])
        return batch, plan, [uids[i] for i in plan.dropped]

    def generate_sequences(self, prompts: TensorDict) -> None:
        if bool(tu.get_non_tensor_data(prompts, "validate", False)):
            return super().generate_sequences(prompts)
        batch, plan, dropped = self.prepare_batch(prompts)
        if dropped:
            step = tu.get_non_tensor_data(prompts, "global_steps", 0)
            tags = [{"is_prompt": True, "status": "finished", "global_steps": step, "cobarl_dropped": True}] * len(dropped)
            tq.kv_batch_put(keys=dropped, partition_id="train", tags=tags)
        if len(batch):
            super().generate_sequences(batch)


def _setup_state(config: Any, settings: PluginSettings) -> SharedState:
    """Create (or reuse) the shared state, check the config, and restore it on resume."""
    reward_model = _select(config, "reward.reward_model")
    if reward_model is not None and reward_model.get("enable", False) and not reward_model.get("enable_resource_pool", False):
        raise ValueError(
            "cobarl needs rewards when the replay buffer samples (like DAPO filtering): use a rule-based "
            "reward or reward.reward_model.enable_resource_pool=True, not a colocated reward model"
        )
    sampler = _select(config, "trainer.v1.sampler.custom_sampler.name")
    if sampler not in ("CobaReplayBuffer", "CobaReplayBufferAsync"):
        logger.warning("cobarl: trainer.v1.sampler.custom_sampler is %r; statistics will never be updated", sampler)
    if _select(config, "trainer.checkpoint_callback_class") != CALLBACK_FQN:
        logger.warning("cobarl: trainer.checkpoint_callback_class is not %s; statistics are not checkpointed", CALLBACK_FQN)
    state = get_state(settings.name, settings)
    with state.lock:
        trainer_cfg = _plain(config.trainer)
        folder = resume_dir(trainer_cfg) if state.restored_from is None else None
        if folder is not None:
            saved = load_state(folder)
            if saved is None:
                logger.warning("cobarl: %s has no cobarl_state.json; statistics start empty", folder)
            else:
                state.load_state_dict(saved)
                logger.info("cobarl: restored allocator statistics from %s", folder)
            state.restored_from = folder
    return state


# 2. replay buffer: statistics from finished groups ------------------------------------------------------
class _CobaSamplingMixin:
    """Adds a statistics update to ``sample`` (verl 0.9 signature ``sample(self, global_steps: int,
    partition_id: str, batch_size: int) -> tuple[KVBatchMeta, dict]``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cobarl_settings = parse_settings(_plain(self.sampler_kwargs or {}))

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id == "train" and batch.keys:
            metrics.update(self.cobarl_observe(batch))
        return batch, metrics

    def cobarl_observe(self, batch) -> dict[str, float]:
        """Rewards of a sampled ``KVBatchMeta`` -> statistics update -> metrics (TRL trainer names)."""
        keys = [k for k, tag in zip(batch.keys, batch.tags) if not (tag or {}).get("is_padding", False)]
        if not keys:
            return {}
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["rm_scores"])
        rewards = [float(score.sum().item()) for score in data["rm_scores"]]
        uids, r = session_rewards(keys, rewards)
        return get_state(self.cobarl_settings.name).observe(uids, r)

    def _clear_groups(self, partition_id: str, uids: set[str]) -> None:
        # Evicted groups (stale / failed) are never observed: forget their plans.
        super()._clear_groups(partition_id, uids)
        try:
            get_state(self.cobarl_settings.name).forget(uids)
        except KeyError:
            pass


class CobaReplayBuffer(_CobaSamplingMixin, ReplayBuffer):
    """``ReplayBuffer`` (``trainer.v1.trainer_mode=sync``) that updates the cobarl statistics."""


class CobaReplayBufferAsync(_CobaSamplingMixin, ReplayBufferAsync):
    """``ReplayBufferAsync`` (``colocate_async`` / ``separate_async``) that updates the cobarl statistics."""


# 3. checkpoints -----------------------------------------------------------------------------------------
class CobaCheckpointCallback(CheckpointCallback):
    """Writes the allocator state to ``<global_step_N>/cobarl_state.json`` after each verl checkpoint
    (``CheckpointCallback.on_save(trainer, global_step, checkpoint_dir, async_save=False, **kwargs)``)."""

    def on_save(self, trainer, global_step: int, checkpoint_dir: str, async_save: bool = False, **kwargs) -> None:
        name = settings_from_config(self.config).name
        try:
            state = get_state(name)
        except KeyError:
            logger.warning("cobarl: no allocator %r to checkpoint (is CobaAgentLoopManager configured?)", name)
            return
        save_state(checkpoint_dir, state.state_dict(), global_step=global_step)


# 4. advantage -------------------------------------------------------------------------------------------
def compute_cobarl_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantage for groups of any size, grouped by ``index`` (verl passes ``uid``).

    Same formula as ``core_algos.compute_grpo_outcome_advantage`` (``(r - mean) / (std + eps)``, unbiased
    std) except that a group of one or whose rewards are all equal gets 0, via
    :func:`cobarl.group_advantages`. ``norm_adv_by_std_in_grpo`` defaults to ``config``'s (True).

    Args:
        token_level_rewards: ``(bs, response_length)``.
        response_mask: ``(bs, response_length)``.
        index: ``(bs,)`` group id of each row.

    Returns:
        ``(advantages, returns)``, both ``(bs, response_length)`` and equal.
    """
    if index is None:
        raise ValueError("cobarl_grpo needs the `uid` column (verl passes it as `index`)")
    if norm_adv_by_std_in_grpo is None:
        norm_adv_by_std_in_grpo = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    scores = token_level_rewards.sum(dim=-1).detach().to(torch.float64).cpu().numpy()
    adv = group_advantages(scores, np.asarray(index), scale="group" if norm_adv_by_std_in_grpo else "none", eps=epsilon)
    out = torch.as_tensor(adv.advantages, dtype=token_level_rewards.dtype, device=token_level_rewards.device)
    out = out.unsqueeze(-1) * response_mask
    return out, out


if ADV_ESTIMATOR not in core_algos.ADV_ESTIMATOR_REGISTRY:  # a second load by file path must not re-register
    core_algos.register_adv_est(ADV_ESTIMATOR)(compute_cobarl_grpo_advantage)
