"""Rollout policies that decide per prompt (Reinforce-Ada, PODS) inside verl's agent-loop workers, and
Reinforce-Ada's pool-baseline advantage estimator (verl 0.9.1 names).

**The worker.** :data:`CobaAgentLoopWorker` is verl's ``AgentLoopWorkerTQ`` (its class, wrapped again
by ``ray.remote``), which ``CobaAgentLoopManager`` installs as its ``agent_loop_workers_class``. For a
training prompt, ``_run_prompt`` runs the policy's step for that one prompt
(:func:`cobarl.policies.step_rounds`, the loop every cobarl runner shares):

1. each round's sessions run through verl's own ``_run_agent_loop`` (agent loop, then the reward in
   ``_agent_loop_postprocess`` -> ``_compute_score``), concurrently, but their outputs are held back
   instead of written to TransferQueue;
2. the rewards go to the policy, which asks for another round or stops;
3. only the rows it keeps are written, by verl's own writer (keys ``{uid}_{j}_{i}``, ``j`` = 0 .. n-1 in
   kept order), each tagged with the group's accounting (:data:`TAG`: every generated reward, the first
   request, rounds, completion tokens, the kept pool positions and the policy's baseline); then the
   prompt's status becomes ``finished``, as verl's own ``_run_prompt`` ends.

Prompts run independently and asynchronously, in every trainer mode. The same policy class decides as
in `cobarl train`, one prompt at a time, which is the same decision because the policy is ``per_prompt``
(:class:`cobarl.policies.RolloutPolicy`). A session that fails marks the prompt ``failure`` and writes
nothing (verl's failure semantics apply); an error of the policy itself (rewards it refuses, a broken
promise) is written to the prompt's tag (:data:`ERROR_TAG`) and stops the run from the replay buffer.

**The estimator** :data:`~cobarl.integrations.verl_plan.POOL_ESTIMATOR`, registered with verl's
``register_adv_est`` when this module is imported (``cobarl.integrations.verl`` imports it, and verl
imports that module to build the replay buffer, in the process that computes advantages): each row's
advantage is :func:`cobarl.advantages.baseline_advantages` of its reward against its prompt's pool
baseline, which the replay buffer read from the rows' tags when it sampled them (``POOL_BASELINES``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

import numpy as np
import ray
import torch
import transfer_queue as tq
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ, apply_greedy_sampling_params

from cobarl import metrics as M
from cobarl.advantages import baseline_advantages
from cobarl.allocation import budget_metrics
from cobarl.integrations.verl_config import settings_from_config
from cobarl.integrations.verl_plan import POOL_ESTIMATOR, ROLLOUT_N_KEY, verl_runner
from cobarl.integrations.verl_state import POOL_BASELINES
from cobarl.policies import make_policy, step_rounds

logger = logging.getLogger(__name__)

# Per-step counts the replay buffer computes itself from the tags (the policy's other counts travel as "extra").
STANDARD = {M.ROLLOUT_COUNT, M.ROLLOUT_TRAINED, M.ROLLOUT_ROUNDS, M.ROLLOUT_PROMPTS, *budget_metrics(np.ones(1))}
TAG = "cobarl"  # trajectory tag: the group's accounting (see group_tag)
ERROR_TAG = "cobarl_error"  # prompt tag: a policy error, raised by the replay buffer
PAD_PREFIX = "pad"  # uid prefix of verl's synthetic padding rows (verl.trainer.ppo.padding_utils.upsample_batch_to_divisible_size)
_HOLD = contextvars.ContextVar("cobarl_hold", default=False)  # set while a prompt's rounds run: hold outputs back


class PolicyError(RuntimeError):
    """The rollout policy refused a prompt's rewards or broke its protocol: the run must stop, not drop the prompt."""


def group_tag(result, policy_metrics: dict, outputs: list) -> dict:
    """The accounting every kept row of a group carries to the replay buffer (plain JSON): every generated
    reward, the kept pool positions, the first request, rounds, completion tokens, the baseline
    ``[mean, std, scale_by_std]`` (None: the kept group's own) and the policy's own counts."""
    kept = result.kept
    baseline = None
    if kept.baselines is not None:
        (mean, std), = kept.baselines.values()
        baseline = [float(mean), float(std), bool(kept.scale_by_std)]
    own = {k: float(v) for k, v in policy_metrics.items() if k not in STANDARD}
    return {"rewards": result.rewards.tolist(), "kept": kept.rows.tolist(), "first": int(sum(result.plan.values())),
            "rounds": int(result.rounds), "tokens": int(sum(len(o.response_ids) for session in outputs for o in session)),
            "baseline": baseline, "extra": own}


class _RoundsWorker(AgentLoopWorkerTQ.__ray_actor_class__):
    """``AgentLoopWorkerTQ`` whose training prompts run a per-prompt rollout policy (see the module docstring)."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        strategy = settings_from_config(config).strategy
        self.cobarl_strategy = strategy if verl_runner(strategy.policy) == "worker" else None

    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False) -> None:
        if trajectory["validate"] or self.cobarl_strategy is None:
            return await super()._run_prompt(prompt, sampling_params, trajectory, trace=trace)
        uid = prompt["uid"]
        await tq.async_kv_put(key=uid, partition_id="train", tag={"status": "running"})
        tag = {"status": "failure"}
        try:
            await self._cobarl_rounds(prompt, sampling_params, trajectory, trace)
            tag = {"status": "finished"}
        except PolicyError as err:
            logger.error("cobarl: the rollout policy stopped prompt %s: %s", uid, err)
            tag[ERROR_TAG] = str(err)
        except Exception:
            logger.exception(f"Error in cobarl's rounds for uid={uid}")
        await tq.async_kv_put(key=uid, partition_id="train", tag=tag)

    async def _cobarl_rounds(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool) -> None:
        n = int(prompt.pop(ROLLOUT_N_KEY, self.config.actor_rollout_ref.rollout.n))
        sampling_params = dict(sampling_params)
        if not prompt.pop("__do_sample__", True):  # as verl's own _run_prompt
            apply_greedy_sampling_params(sampling_params)
        policy = make_policy(self.cobarl_strategy)
        uid = prompt["uid"]
        held: list[tuple[list, dict]] = []  # pool position -> (session outputs, their kwargs)
        token = _HOLD.set(True)
        try:
            step = step_rounds(policy, [uid], n)
            rows = _policy_call(next, step)
            while True:
                sessions = await asyncio.gather(*[
                    self._run_agent_loop(sampling_params, trajectory=trajectory, trace=trace, session_id=len(held) + j, **prompt)
                    for j in range(len(rows))], return_exceptions=True)  # every session settles before any error counts
                errors = [s for s in sessions if isinstance(s, BaseException)]
                if errors:
                    raise errors[0]
                held.extend(sessions)
                rewards = np.array([_final_reward(outputs) for outputs, _ in sessions], dtype=np.float64)
                try:
                    rows = _policy_call(step.send, rewards)
                except StopIteration as done:
                    result = done.value
                    break
        finally:
            _HOLD.reset(token)
        await self._write_kept(uid, result, policy.metrics(), held)

    async def _write_kept(self, uid: str, result, policy_metrics: dict, held: list) -> None:
        """verl's own writer for the kept sessions (renumbered 0 .. n-1), then the group's tag on each of their rows."""
        kept = result.kept.rows.tolist()
        await asyncio.gather(*[
            super(_RoundsWorker, self)._agent_loop_postprocess(held[p][0], False, **{**held[p][1], "session_id": j})
            for j, p in enumerate(kept)])
        keys = [f"{uid}_{j}_{i}" for j, p in enumerate(kept) for i in range(len(held[p][0]))]
        tag = {TAG: group_tag(result, policy_metrics, [outputs for outputs, _ in held])}
        await tq.async_kv_batch_put(keys=keys, partition_id="train", tags=[tag] * len(keys))

    async def _agent_loop_postprocess(self, output, validate, **kwargs):
        if not _HOLD.get():
            return await super()._agent_loop_postprocess(output, validate, **kwargs)
        outputs = output if isinstance(output, list) else [output]
        if not outputs:
            raise RuntimeError(f"empty agent-loop output for prompt {kwargs.get('uid')}")
        await self._compute_score(outputs, kwargs=kwargs)  # verl's reward, as its own postprocess computes it
        return outputs, kwargs


def _policy_call(fn, arg):
    """Advance the policy's step; its own errors become :class:`PolicyError` (StopIteration passes: the step ended)."""
    try:
        return fn(arg)
    except StopIteration:
        raise
    except Exception as err:
        raise PolicyError(f"{type(err).__name__}: {err}") from err


def _final_reward(outputs: list) -> float:
    score = outputs[-1].reward_score
    if score is None:
        raise PolicyError("a rollout has no reward inside the agent-loop worker (a colocated reward model scores only "
                          "after sampling): use a rule-based reward or reward.reward_model.enable_resource_pool=true")
    return float(score)


CobaAgentLoopWorker = ray.remote(_RoundsWorker)


@core_algos.register_adv_est(POOL_ESTIMATOR)
def pool_baseline_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index=None, config=None,
                            **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages against each prompt's pool baseline (Reinforce-Ada), as `cobarl train` computes them
    (:func:`cobarl.advantages.baseline_advantages`, float64), broadcast over the response tokens in the
    float32 of verl's advantages. verl's synthetic padding rows (zero reward, no loss) get 0."""
    uids = [str(u) for u in index]
    real = [u for u in uids if not (u.startswith(PAD_PREFIX) and u not in POOL_BASELINES)]
    missing = sorted({u for u in real if u not in POOL_BASELINES})
    if missing:
        raise KeyError(f"{POOL_ESTIMATOR}: no pool baseline for uid(s) {missing[:3]}: the estimator reads the baselines "
                       "cobarl's replay buffer records when it samples a Reinforce-Ada group; use it only with cobarl's "
                       "replay buffer and a policy with its own baselines")
    scores = token_level_rewards.sum(dim=-1).double().cpu().numpy()
    rows = np.array([u in POOL_BASELINES for u in uids])
    adv = np.zeros(len(uids), dtype=np.float64)
    if rows.any():
        ids = [u for u, r in zip(uids, rows) if r]
        scale = {POOL_BASELINES[u][2] for u in ids}
        if len(scale) > 1:
            raise ValueError(f"{POOL_ESTIMATOR}: one batch mixes groups that scale by their std and groups that do not")
        baselines = {u: POOL_BASELINES[u][:2] for u in ids}
        adv[rows] = baseline_advantages(scores[rows], ids, baselines, scale_by_std=scale.pop())
    out = torch.as_tensor(adv, dtype=torch.float32, device=token_level_rewards.device).unsqueeze(-1) * response_mask
    return out, out
