"""The verl plugin's start-up checks and resume rules (verl 0.9.1 config keys).

:func:`check_config` runs when verl builds cobarl's replay buffer (``PPOTrainer.__init__``, before any
model is loaded) and refuses, with the line to set, every configuration the plugin would get silently
wrong; :func:`restore` reloads the shared state from the checkpoint verl resumes from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from verl.trainer.ppo import core_algos
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

from cobarl.integrations.verl_plan import (
    POOL_ESTIMATOR,
    RUNNER_LIMITS,
    RUNNER_MODES,
    RUNNERS,
    PluginSettings,
    check_rollout_n,
    parse_settings,
    plan_options,
    verl_runner,
)
from cobarl.io import load_state

logger = logging.getLogger(__name__)

MANAGER_FQN = "cobarl.integrations.verl.CobaAgentLoopManager"
CALLBACK_FQN = "cobarl.integrations.verl.CobaCheckpointCallback"
SAMPLER_PATH = "pkg://cobarl.integrations.verl"
ESTIMATOR_MODULE = "cobarl.integrations.verl_rounds"  # registers POOL_ESTIMATOR with verl when imported
SAMPLER_FOR_MODE = {"sync": "CobaReplayBuffer", "colocate_async": "CobaReplayBufferAsync", "separate_async": "CobaReplayBufferAsync"}


def plain(cfg: Any) -> Any:
    """A DictConfig (or anything mapping-like) as plain Python containers."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


def select(cfg: Any, dotted: str, default: Any = None) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        node = node.get(part, None) if hasattr(node, "get") else getattr(node, part, None)
    return default if node is None else node


def settings_from_config(config: Any) -> PluginSettings:
    """Plugin settings from the full verl config (``trainer.v1.sampler.sampler_kwargs``)."""
    return parse_settings(plain(select(config, "trainer.v1.sampler.sampler_kwargs") or {}))


def check_config(config: Any, settings: PluginSettings) -> None:
    """Refuse, with the fix, every configuration the plugin would silently get wrong."""
    mode = select(config, "trainer.v1.trainer_mode", "sync")
    problems = _plumbing_problems(config, mode) + _policy_problems(config, settings, mode)
    reward_model = select(config, "reward.reward_model")
    if reward_model is not None and reward_model.get("enable", False) and not reward_model.get("enable_resource_pool", False):
        problems.append(
            "a colocated reward model scores only after replay-buffer sampling; cobarl (like DAPO filtering) needs rewards "
            "when it samples, and a rollout policy inside the agent-loop worker: use a rule-based reward or "
            "reward.reward_model.enable_resource_pool=true"
        )
    if problems:
        raise ValueError("cobarl cannot run with this verl configuration:\n  - " + "\n  - ".join(problems))
    estimator = str(select(config, "algorithm.adv_estimator", "grpo"))
    if estimator not in ("grpo", POOL_ESTIMATOR):
        logger.warning(
            "cobarl: algorithm.adv_estimator=%s receives groups of different sizes; cobarl is tested with grpo", estimator
        )


def _plumbing_problems(config: Any, mode: str) -> list[str]:
    """The three classes verl must load from cobarl (buffer for the mode, manager, checkpoint callback)."""
    problems = []
    if mode not in SAMPLER_FOR_MODE:
        problems.append(f"trainer.v1.trainer_mode={mode!r} is not supported (supported: {', '.join(SAMPLER_FOR_MODE)})")
    elif select(config, "trainer.v1.sampler.custom_sampler.name") != SAMPLER_FOR_MODE[mode]:
        problems.append(f"trainer.v1.sampler.custom_sampler.name must be {SAMPLER_FOR_MODE[mode]} for trainer_mode={mode}")
    if select(config, "actor_rollout_ref.rollout.agent.agent_loop_manager_class") != MANAGER_FQN:
        problems.append(f"actor_rollout_ref.rollout.agent.agent_loop_manager_class must be {MANAGER_FQN} (it writes __rollout_n__)")
    if select(config, "trainer.checkpoint_callback_class") != CALLBACK_FQN:
        problems.append(f"trainer.checkpoint_callback_class must be {CALLBACK_FQN} (cobarl's statistics are part of each checkpoint)")
    return problems


def _policy_problems(config: Any, settings: PluginSettings, mode: str) -> list[str]:
    """What the strategy's policy needs from verl: a trainer mode that can run it, verl's filter on or off,
    its advantage estimator, a feasible rollout.n."""
    strategy = settings.strategy
    policy, name, runner = strategy.policy, strategy.name, verl_runner(strategy.policy)
    problems = []
    if mode in SAMPLER_FOR_MODE and mode not in RUNNER_MODES[runner]:
        problems.append(f"strategy {name} runs as {RUNNERS[runner]}, which trainer_mode={mode} cannot do: "
                        f"{RUNNER_LIMITS[runner]}; use trainer.v1.trainer_mode={' or '.join(RUNNER_MODES[runner])}")
    filter_on = bool(select(config, "algorithm.filter_groups.enable", False))
    if runner == "verl" and not filter_on:
        problems.append(
            f"strategy {name} runs verl's own dynamic sampling (uniform budgets, groups with one reward value evicted and "
            "refilled by verl's replay buffer): set algorithm.filter_groups.enable=true (and algorithm.filter_groups.metric, "
            "e.g. acc)")
    if runner in ("worker", "trainer") and filter_on:
        problems.append(f"strategy {name} decides which groups train ({policy.decides}); verl's filter would drop groups "
                        "it kept: set algorithm.filter_groups.enable=false")
    if runner == "trainer" and bool(select(config, "trainer.v1.sampler.sync_refill_failed_groups", False)):
        problems.append(f"strategy {name} draws its own prompts; verl's refill of failed groups would start another of its "
                        "steps: set trainer.v1.sampler.sync_refill_failed_groups=false")
    problems += _estimator_problems(config, strategy)
    n = int(config.actor_rollout_ref.rollout.n)
    try:
        if runner in ("plan", "verl"):
            check_rollout_n(n, plan_options(strategy))
        elif n < 2:
            raise ValueError(f"actor_rollout_ref.rollout.n={n}: {name} trains rollout.n rollouts per prompt, and a group "
                             "of one gets its raw reward as advantage from verl; use 2 or more")
        elif runner == "worker":  # the policy's own check of n against its options (round_size, generate_size)
            from cobarl.policies import make_policy

            make_policy(strategy).begin(["probe"], n)
    except ValueError as err:
        problems.append(str(err))
    return problems


def _estimator_problems(config: Any, strategy) -> list[str]:
    policy, name = strategy.policy, strategy.name
    estimator = str(select(config, "algorithm.adv_estimator", "grpo"))
    if estimator == "cobarl_grpo":
        return ["algorithm.adv_estimator=cobarl_grpo was removed: it skipped verl's final-output-per-session selection; "
                "use algorithm.adv_estimator=grpo (verl groups by uid, so per-prompt budgets need nothing else)"]
    if policy.pool_baselines and estimator != POOL_ESTIMATOR:
        return [f"strategy {name} centres each prompt's rows by its own baseline (the statistics of every rollout it "
                f"generated), which verl's {estimator} cannot see: set algorithm.adv_estimator={POOL_ESTIMATOR}"]
    scale = getattr(strategy.options, "scale_by_std", None)
    norm = bool(select(config, "algorithm.norm_adv_by_std_in_grpo", True))
    if estimator == POOL_ESTIMATOR and scale is not None and norm != scale:
        return [f"algorithm.norm_adv_by_std_in_grpo={str(norm).lower()} but {name}'s scale_by_std={str(scale).lower()}: "
                f"{POOL_ESTIMATOR} divides by the pool's std exactly when the policy's scale_by_std says so; set "
                f"algorithm.norm_adv_by_std_in_grpo={str(scale).lower()} (or trainer.v1.sampler.sampler_kwargs."
                f"scale_by_std={str(norm).lower()}) so the two agree"]
    if estimator == POOL_ESTIMATOR and not policy.pool_baselines:
        return [f"algorithm.adv_estimator={POOL_ESTIMATOR} is for policies whose baselines come from their whole pool "
                f"(Reinforce-Ada); "
                f"strategy {name} trains with group baselines: use algorithm.adv_estimator=grpo"]
    registered = core_algos.ADV_ESTIMATOR_REGISTRY.get(POOL_ESTIMATOR)
    if estimator == POOL_ESTIMATOR and getattr(registered, "__module__", None) != ESTIMATOR_MODULE:
        return [f"the advantage estimator {POOL_ESTIMATOR} is not cobarl's in this process ({registered!r}; "
                f"{ESTIMATOR_MODULE} registers it when imported): import cobarl.integrations.verl before verl builds "
                "the trainer, and register no other estimator under that name"]
    return []


# resume ------------------------------------------------------------------------------------------------
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


def restore(state, config: Any) -> None:
    """Load the shared state saved in the folder verl resumes from (``missing_state`` decides a missing file)."""
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
            f"{CALLBACK_FQN}, or copied without it), so cobarl's state (statistics, policy, totals) cannot be restored. "
            "Either copy that file into the folder, start the statistics empty with "
            "trainer.v1.sampler.sampler_kwargs.missing_state=fresh, or start over with trainer.resume_mode=disable."
        )
    state.load_state_dict(saved)
    state.restored_from = folder
    logger.info("cobarl: restored its state from %s", folder)
