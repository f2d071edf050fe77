"""Generation in rounds for `AdaptiveGRPOTrainer`: policies that decide between generation calls
(Reinforce-Ada), draw more prompts (DAPO) or train on a subset of what they generated (PODS).

One step, on N processes::

    main process                                   every process
    run_step(policy, ...) -- request rows -->      pad the rows to a multiple of N (repeat the last row),
                                                   generate its slice in ONE call, score it (TRL's
                          <-- gathered rewards --  reward functions; rewards gathered, padding dropped)
    ... more rounds, then finish(): kept rows -->  exchange the kept rows' tokens, take its slice of
                                                   the trained batch, hand it to TRL as generated

The main process decides and broadcasts each request and the kept rows, so the policy's state
(including DAPO's prompt stream) lives once and is saved once. An error in the policy (DAPO's cap
on generation batches) is broadcast too, so every rank stops with the same message instead of
waiting for a request that never comes. TRL then computes log-probs and the loss on exactly the
kept rows (``rollouts_per_step`` of them); advantages use the policy's baselines when it has them
(Reinforce-Ada's pool mean over every generated rollout; DAPO's and GRESO's public GRPO statistics of
each kept group), keyed by group (``Kept.group_keys``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from cobarl import metrics as M
from cobarl.policies import run_step
from cobarl.train.grouping import scalar_rewards


@dataclass
class RoundLog:
    """What one step generated, in generation order (padding dropped)."""

    rows: dict = field(default_factory=dict)  # global row -> this rank's generated fields
    rewards_per_func: list = field(default_factory=list)  # [rows, funcs] per round, gathered
    tokens: int = 0
    failures: int = 0  # failed reward calls, summed over the rounds
    seconds: float = 0.0  # spent generating and scoring (not cobarl's overhead)


class RoundsMixin:
    """The generation-in-rounds half of `AdaptiveGRPOTrainer` (see the module docstring)."""

    def _check_rounds_supported(self) -> None:
        unsupported = [name for name, on in (("tools", bool(getattr(self, "tools", None))),
                                             ("rollout_func", getattr(self, "rollout_func", None) is not None),
                                             ("environment_factory", getattr(self, "environment_factories", None) is not None))
                       if on]
        if unsupported:
            raise ValueError(f"{self.policy.config.name} generates in rounds, which cobarl does not support "
                             f"together with {', '.join(unsupported)}; use a plan-before-generation allocator")

    def _broadcast(self, payload):
        if self.accelerator.num_processes == 1:
            return payload
        from accelerate.utils import broadcast_object_list

        box = [payload]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def _rounds_step(self, prompt_ids: list):
        """Run the policy's step (its decisions on the main process); returns (StepResult, this rank's log) on every rank."""
        log, total = RoundLog(), self.args.rollouts_per_step
        if self.accelerator.is_main_process:
            generating = [False]

            def generate(rows):
                self._broadcast(("rows", rows))
                generating[0] = True
                out = self._generate_round(rows, log)
                generating[0] = False
                return out

            try:
                result = run_step(self.policy, prompt_ids, total, generate)  # total_budget from here down
            except Exception as err:
                # A policy error (DAPO's cap, a refused reward) stops every rank with its message; an error
                # inside generation happened on every rank's side of the same collectives, so no broadcast.
                if not generating[0]:
                    self._broadcast(("error", f"{type(err).__name__}: {err}"))
                raise
            self._broadcast(("kept", result))
            return result, log
        while True:
            kind, payload = self._broadcast(None)
            if kind == "rows":
                self._generate_round(payload, log)
            elif kind == "error":
                raise RuntimeError(f"the main process stopped the step: {payload}")
            else:
                return payload, log

    def _generate_round(self, rows: list, log: RoundLog) -> np.ndarray:
        """Generate and score one round's rows (global), this rank's slice; returns the rows' scalar rewards."""
        t0 = time.perf_counter()
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        padded = rows + [rows[-1]] * (-len(rows) % world)
        local = len(padded) // world
        mine = padded[rank * local : (rank + 1) * local]
        inputs = [dict(self.train_dataset[self._row_index[pid]]) for pid in mine]
        prompts = [x["prompt"] for x in inputs]
        prompt_ids, completion_ids, tool_mask, completions, logprobs, *_ = self._generate(prompts)
        rpf = self._calculate_rewards(inputs, prompts, completions, completion_ids)
        log.failures += self._reward_failures
        rpf = rpf.detach().double().cpu().numpy()[: len(rows)]
        offset = sum(len(r) for r in log.rewards_per_func)
        for k in range(len(mine)):
            g = rank * local + k
            if g < len(rows):
                log.rows[offset + g] = (inputs[k], prompts[k], prompt_ids[k], completion_ids[k], completions[k],
                                        None if logprobs is None else logprobs[k])
        lengths = torch.tensor([len(ids) for g, ids in zip(range(rank * local, (rank + 1) * local), completion_ids)
                                if g < len(rows)], device=self.accelerator.device, dtype=torch.long)
        log.tokens += int(self.accelerator.gather(lengths.sum().reshape(1)).sum().item())
        log.rewards_per_func.append(rpf)
        log.seconds += time.perf_counter() - t0
        return scalar_rewards(rpf, self.reward_weights.detach().double().cpu().numpy())

    def _kept_batch(self, kept_rows: np.ndarray, log: RoundLog, local: int):
        """This rank's slice of the trained batch: (input rows, the `_generate` tuple, gathered kept rewards)."""
        rank = self.accelerator.process_index
        mine = kept_rows[rank * local : (rank + 1) * local].tolist()
        every = log.rows
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            wanted = set(kept_rows.tolist())
            every = {}
            for part in gather_object([{g: v for g, v in log.rows.items() if g in wanted}]):
                every.update(part)
        fields = [every[g] for g in mine]
        inputs = [f[0] for f in fields]
        logprobs = None if any(f[5] is None for f in fields) else [f[5] for f in fields]
        generated = ([f[2] for f in fields], [f[3] for f in fields], None, [f[4] for f in fields], logprobs, {}, None, [])
        rpf = np.concatenate(log.rewards_per_func)[kept_rows]
        return inputs, generated, rpf

    def _generate_in_rounds(self, inputs: list[dict]):
        """`_generate_and_score_completions` for a policy that is not single-pass (see the module docstring)."""
        from cobarl.advantages import baseline_advantages, group_advantages
        from cobarl.train.grouping import trl_advantages

        t0 = time.perf_counter()
        prompt_ids = self._gathered_prompt_ids(inputs)
        result, log = self._rounds_step(prompt_ids)
        kept = result.kept  # run_step checked it: exactly rollouts_per_step rows, each generated once
        rank, local = self.accelerator.process_index, len(inputs)
        kept_inputs, generated, rpf = self._kept_batch(kept.rows, log, local)
        self._pending = (generated, torch.as_tensor(rpf, dtype=torch.float32, device=self.accelerator.device))
        overhead = time.perf_counter() - t0 - log.seconds
        try:
            output = super()._generate_and_score_completions(kept_inputs)
        finally:
            self._pending = None
        t1 = time.perf_counter()
        weights = self.reward_weights.detach().double().cpu().numpy()
        ids = [result.group_ids[g] for g in kept.rows.tolist()]
        groups = kept.group_keys(result.group_ids)  # a prompt drawn twice in a step (DAPO, GRESO) is two groups
        rewards = scalar_rewards(rpf, weights)
        if kept.baselines is not None:
            advantages = baseline_advantages(rewards, groups, kept.baselines, scale_by_std=kept.scale_by_std,
                                             float32=kept.float32)
        else:
            advantages = trl_advantages(rpf, weights, groups, scale_rewards=self.scale_rewards,
                                        aggregation=self.multi_objective_aggregation)
        device = output["advantages"].device
        output["advantages"] = torch.as_tensor(advantages[rank * local : (rank + 1) * local], dtype=torch.float32,
                                               device=device)
        self._replace_logged_advantages(advantages)
        self._batch_ids = ids
        self._last_plan = (list(result.plan), np.fromiter(result.plan.values(), dtype=np.int64))
        scored = ~np.isnan(rewards)
        adv = group_advantages(rewards[scored], [g for g, ok in zip(groups, scored) if ok], scale="none") if scored.any() else None
        self._reward_failures = log.failures
        self._check_reward_failures(np.concatenate(log.rewards_per_func))
        self._overhead_s += overhead + time.perf_counter() - t1
        generated_rewards = scalar_rewards(np.concatenate(log.rewards_per_func), weights)
        accounting = {**result.metrics(), M.ROLLOUT_TOKENS: float(log.tokens)}
        observed = self.policy.metrics() if self.accelerator.is_main_process else {}
        self._log_step_metrics(self._last_plan[1], generated_rewards[~np.isnan(generated_rewards)], adv,
                               {**observed, **accounting})
        return output
