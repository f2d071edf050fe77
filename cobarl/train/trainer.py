"""`AdaptiveGRPOTrainer`: TRL's `GRPOTrainer` with per-prompt rollout budgets.

Tested against TRL 1.14.2 and 1.16.0 (pin: >=1.14.2,!=1.15.0,<1.17) (the private hooks below drift between TRL minors; see
``SUPPORTED_TRL``). Four hooks change; everything else is TRL's:

1. ``_get_train_sampler`` returns a :class:`PromptBatchSampler`: each generation batch holds
   ``prompts_per_step`` distinct prompts laid out in ``rollouts_per_step`` placeholder rows.
2. ``_generate_and_score_completions`` (train mode) asks the allocator for per-prompt counts at the
   moment the batch is generated -- so the allocation always sees the latest statistics, even though
   the dataloader prefetches -- re-lays the rows out as each prompt repeated ``counts[i]`` times,
   lets TRL generate and score them, then replaces TRL's ``view(-1, num_generations)`` advantages
   with group-id advantages (TRL's formulas, both ``multi_objective_aggregation`` modes) and feeds
   the gathered raw rewards to the allocator. With several processes the main process plans and
   broadcasts the counts; every rank lays out the same global batch, generates its slice, and
   observes the same gathered rewards in the same order, so allocator state is identical on all
   ranks whatever the allocator (a stochastic callable included). ``_generate`` makes TRL's vLLM
   paths generate one completion per row (see its docstring)::

       sampler rows   p3 p3 p3 p3 p8 p8 p8 p8 p1 p1 p1 p1      (placeholders, 3 prompts x 4)
       allocation     p3: 2        p8: 7          p1: 3         (sums to 12, each in [min, max])
       generated      p3 p3 p8 p8 p8 p8 p8 p8 p8 p1 p1 p1      (group id = prompt id)

3. ``_save_checkpoint`` writes ``cobarl_state.json`` (allocator state, micro-step) atomically into
   the checkpoint directory before TRL writes ``trainer_state.json`` -- plus each rank's generated
   batch when the checkpoint falls inside a generation (``num_iterations > 1``);
   ``_load_optimizer_and_scheduler`` restores them, so a resumed run neither re-plans nor
   re-observes a batch.
4. ``log`` adds ``perf/step_s``, ``perf/rollouts_per_s`` and periodic ``eval/*`` accuracy (main
   process only); ``_calculate_rewards`` counts failed reward calls (``reward/failures``) and the
   step aborts when nearly all of them failed (``reward_failure_limit``).
Other policies (Reinforce-Ada, DAPO, PODS, GRESO) replace hook 2 with :mod:`cobarl.train.rounds`;
``max_generated`` is :mod:`cobarl.train.budget`.

``num_generations`` only has to satisfy TRL's divisibility checks (it is set to a divisor of the
batch); TRL still uses it in ``view(-1, num_generations)`` for ``frac_reward_zero_std`` (which we
overwrite); vLLM generation in training sees 1 instead (``_generate``). With ``loss_type="dapo"`` (TRL's default) every
token counts once, so a prompt with more rollouts carries proportionally more weight in the loss.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable

from pathlib import Path
from typing import Any

import numpy as np
import torch
from packaging.version import Version
from torch.utils.data import Sampler

import trl
from trl import GRPOTrainer

from cobarl import metrics as M
from cobarl.advantages import group_advantages
from cobarl.io import check_state_format, load_state, save_state, write_atomic
from cobarl.train.checkpoints import buffer_file, cpu_map_location
from cobarl.train.grouping import scalar_rewards, trl_advantages
from cobarl.train.rewards import exceeds_failure_limit  # noqa: F401 -- also imported from here
from cobarl.train.budget import GeneratedBudgetMixin, StopAtGenerated
from cobarl.train.grpo_args import AdaptiveGRPOConfig  # noqa: F401 -- its public home is here
from cobarl.train.rounds import RoundsMixin
from cobarl.train.sampler import PromptBatchSampler

SUPPORTED_TRL = (Version("1.14.2"), Version("1.17"))  # [min, max); 1.15.0 is excluded below
BROKEN_TRL = (Version("1.15.0"),)  # its chunked log-prob path fails on CPU-only torch
PROMPT_ID = "prompt_id"
# The checkpoint state file (cobarl_state.json next to TRL's files): step counters and the allocator's own state.
STATE_FORMAT = "cobarl.trl-checkpoint"
STATE_VERSION = 2

if not SUPPORTED_TRL[0] <= Version(trl.__version__) < SUPPORTED_TRL[1] or Version(trl.__version__) in BROKEN_TRL:  # pragma: no cover
    raise ImportError(
        f"cobarl.train needs trl>={SUPPORTED_TRL[0]},!=1.15.0,<{SUPPORTED_TRL[1]} (it overrides private GRPOTrainer "
        f"hooks); found trl {trl.__version__}. Install a supported version: pip install 'trl>=1.14.2,!=1.15.0,<1.17'"
    )


class AdaptiveGRPOTrainer(RoundsMixin, GeneratedBudgetMixin, GRPOTrainer):
    """GRPO with a per-prompt rollout budget chosen every step by a `cobarl` allocator.

    Args:
        model, reward_funcs, train_dataset, **kwargs: as for `trl.GRPOTrainer`. ``train_dataset``
            must be map-style; a ``prompt_id`` column (unique int or str ids) is added from the row
            index if absent.
        args (`AdaptiveGRPOConfig`): TRL options plus the allocation options.
        allocator (`cobarl.allocator.Allocator` or `cobarl.policies.RolloutPolicy`, *optional*): use
            this allocator or policy instead of building one from ``args``.
        eval_fn (`Callable[[model], dict[str, float]]`, *optional*): held-out evaluation, logged as
            ``eval/<key>`` every ``eval_every`` steps.
    """

    def __init__(
        self,
        model,
        reward_funcs,
        args: AdaptiveGRPOConfig,
        train_dataset=None,
        *,
        allocator=None,
        eval_fn: Callable[[Any], dict[str, float]] | None = None,
        eval_every: int = 0,
        **kwargs,
    ):
        if not isinstance(args, AdaptiveGRPOConfig):
            raise TypeError(f"args must be an AdaptiveGRPOConfig, got {type(args).__name__}")
        if train_dataset is None or not hasattr(train_dataset, "__getitem__") or not hasattr(train_dataset, "__len__"):
            raise TypeError("AdaptiveGRPOTrainer needs a map-style train_dataset (datasets.Dataset)")
        if PROMPT_ID not in train_dataset.column_names:
            train_dataset = train_dataset.map(lambda _, i: {PROMPT_ID: i}, with_indices=True)
        ids = train_dataset[PROMPT_ID]
        if len(set(ids)) != len(ids):
            dup = next(pid for pid in ids if ids.count(pid) > 1)
            raise ValueError(f"train_dataset column {PROMPT_ID!r} must be unique; {dup!r} appears more than once")
        if args.prompts_per_step > len(train_dataset):
            raise ValueError(
                f"prompts_per_step ({args.prompts_per_step}) exceeds the number of training prompts ({len(train_dataset)})"
            )
        self._setup_policy(args, allocator, ids)
        self._row_index = {pid: i for i, pid in enumerate(ids)}
        self._pending = None  # (the `_generate` tuple, gathered rewards) of the kept rows of a step in rounds
        self._generated_total = 0  # rollouts generated so far in the run (all processes)
        self.eval_fn, self.eval_every = eval_fn, eval_every
        self._step_t0: float | None = None
        self._overhead_s = 0.0
        self._rollouts_since_log = 0
        self._last_logged_step = 0
        self._last_plan = None  # (prompt_ids, counts) of the latest allocation, for tests and debugging
        self._batch_ids: list | None = None  # global prompt id of each generated row
        self._rewards_per_func: torch.Tensor | None = None
        self._reward_failures = 0
        self._step_failures = (0, 0)  # (failed reward calls, reward calls) of the latest generation
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset, **kwargs)
        if self._in_rounds:
            self._check_rounds_supported()
        self.add_callback(StopAtGenerated(self))

    def _setup_policy(self, args: AdaptiveGRPOConfig, allocator, ids: list) -> None:
        """``self.policy`` (and ``self.allocator`` for a plan-before-generation one) from the arguments."""
        from cobarl.policies import AllocatorPolicy, PromptStream, RolloutPolicy, make_policy

        if isinstance(allocator, RolloutPolicy):
            self.policy = allocator
        elif allocator is not None:
            self.policy = AllocatorPolicy(args.strategy_config(), allocator)
        else:
            self.policy = make_policy(args.strategy_config())
        # A plan-before-generation allocator generates its step in one call (hook 2); the rest in rounds.
        self.allocator = getattr(self.policy, "allocator", None)
        self._in_rounds = not (self.policy.single_pass and self.allocator is not None)
        policy = type(self.policy)
        if policy.own_baselines and args.scale_rewards != policy.baseline_scale:
            warnings.warn(f"scale_rewards={args.scale_rewards!r} does not apply to {self.policy.config.name}: it centres "
                          f"(and scales) each row by the baseline it returns: {policy.baselines_are}", stacklevel=3)
        if self.policy.selects_prompts:
            from cobarl.train.layout import check_strategy

            errors = check_strategy(self.policy.config, args.layout, len(ids))
            if errors:
                raise ValueError("; ".join(errors))
            self.policy.stream = PromptStream(ids, seed=args.seed)

    # 1. sampler ------------------------------------------------------------------------------------
    def _get_train_sampler(self, dataset=None) -> Sampler:
        dataset = self.train_dataset if dataset is None else dataset
        return PromptBatchSampler(
            len(dataset),
            self.args.prompts_per_step,
            self.args.rollouts_per_step,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            seed=self.args.seed,
        )

    # 2. allocation, advantages, statistics ----------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if self._pending is not None:  # the kept rows of a step in rounds were scored when generated
            return self._pending[1]
        before = [getattr(f, "failure_count", 0) for f in self.reward_funcs]
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        failed = sum(getattr(f, "failure_count", 0) - b for f, b in zip(self.reward_funcs, before))
        # Failures a guarded reward scored as 0 are counted on the rank that scored them: sum over ranks.
        failed_t = torch.tensor([float(failed)], device=self.accelerator.device)
        self._reward_failures = int(self.accelerator.gather(failed_t).sum().item())
        self._rewards_per_func = rewards_per_func  # gathered: one row per rollout on every process
        return rewards_per_func

    def _plan_generation(self, inputs: list[dict]) -> tuple[list, np.ndarray, list[dict]]:
        """One plan for all ranks: the main process plans from the gathered batch and broadcasts the counts.

        Returns the prompt ids, their counts and the global row layout (each prompt repeated
        ``counts[i]`` times); rank ``r`` generates rows ``r * local .. (r + 1) * local``.
        """
        total = self.args.rollouts_per_step
        prompt_ids = self._gathered_prompt_ids(inputs)
        counts = None
        if self.accelerator.is_main_process:
            counts = np.asarray(self.allocator.plan(prompt_ids, total).counts, dtype=np.int64).tolist()
        counts = np.asarray(self._broadcast(counts), dtype=np.int64)
        if counts.sum() != total or len(counts) != len(prompt_ids) or (counts < 0).any():
            raise RuntimeError(f"allocator returned counts {counts.tolist()} for {len(prompt_ids)} prompts and budget {total}")
        rows = [dict(self.train_dataset[self._row_index[pid]]) for pid, c in zip(prompt_ids, counts.tolist()) for _ in range(c)]
        return prompt_ids, counts, rows

    def _gathered_prompt_ids(self, inputs: list[dict]) -> list:
        """The distinct prompt ids of the generation batch over every process, in batch order."""
        ids = [row[PROMPT_ID] for row in inputs]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            ids = gather_object(ids)
        return list(dict.fromkeys(ids))

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        if self._in_rounds:
            return self._generate_in_rounds(inputs)
        t0 = time.perf_counter()
        rank, local = self.accelerator.process_index, len(inputs)
        prompt_ids, counts, rows = self._plan_generation(inputs)
        self._batch_ids = [row[PROMPT_ID] for row in rows]
        self._last_plan = (prompt_ids, counts)
        overhead = time.perf_counter() - t0

        output = super()._generate_and_score_completions(rows[rank * local : (rank + 1) * local])

        t1 = time.perf_counter()
        rpf = self._rewards_per_func.detach().double().cpu().numpy()
        self._check_reward_failures(rpf)
        weights = self.reward_weights.detach().double().cpu().numpy()
        rewards = scalar_rewards(rpf, weights)
        advantages = trl_advantages(rpf, weights, self._batch_ids, scale_rewards=self.scale_rewards,
                                    aggregation=self.multi_objective_aggregation)
        device = output["advantages"].device
        output["advantages"] = torch.as_tensor(advantages[rank * local : (rank + 1) * local], dtype=torch.float32, device=device)
        self._replace_logged_advantages(advantages)
        # Unscorable rollouts (every reward function returned None) say nothing about the prompt.
        scored = ~np.isnan(rewards)
        ids = [pid for pid, ok in zip(self._batch_ids, scored) if ok]
        adv = group_advantages(rewards[scored], ids, scale="none") if ids else None
        observed = self.policy.observe(self._batch_ids, rewards) or {}
        overhead += time.perf_counter() - t1
        self._overhead_s += overhead
        tokens = self.accelerator.gather(output["completion_mask"].sum().reshape(1)).sum().item()
        accounting = {M.ROLLOUT_COUNT: float(counts.sum()), M.ROLLOUT_TRAINED: float(counts.sum()), M.ROLLOUT_ROUNDS: 1.0,
                      M.ROLLOUT_PROMPTS: float((counts > 0).sum()), M.ROLLOUT_TOKENS: float(tokens)}
        self._log_step_metrics(counts, rewards[scored], adv, {**observed, **accounting})
        return output

    def _generate(self, prompts: list):
        """In training with vLLM, one completion per row (the rows already repeat each prompt its planned
        number of times): TRL's server mode gathers every rank's rows and asks for ``n=num_generations``
        per ``rows[::num_generations]``; with 1 it sends every row, in the planned order, with ``n=1``, and
        each rank gets back its own rows. Colocate mode already generates ``n=1`` per row on each rank."""
        if self._pending is not None:  # a step in rounds: the kept rows were generated already
            return self._pending[0]
        if not (self.use_vllm and self.model.training):
            return super()._generate(prompts)
        saved, self.num_generations = self.num_generations, 1
        try:
            return super()._generate(prompts)
        finally:
            self.num_generations = saved

    def _check_reward_failures(self, rewards_per_func: np.ndarray) -> None:
        """Count this step's failed reward calls (guard failures + None/NaN returns); abort when nearly all failed."""
        calls = rewards_per_func.size
        failed = self._reward_failures + int(np.isnan(rewards_per_func).sum())
        self._step_failures = (failed, calls)
        if calls and exceeds_failure_limit(failed, calls, self.args.reward_failure_limit):
            details = "; ".join(filter(None, (getattr(f, "last_failure", "") for f in self.reward_funcs)))
            raise RuntimeError(
                f"reward functions failed on {failed} of {calls} calls this step (>= reward_failure_limit "
                f"{self.args.reward_failure_limit:g}): training on these rewards would be meaningless"
                + (f"; last failure: {details}" if details else "")
                + ". Check the reward function (signature f(completion, answer), return type, time limit) "
                "against a few completions."
            )

    def _replace_logged_advantages(self, advantages: np.ndarray) -> None:
        logged = self._logs.get("advantages") if isinstance(self._logs, dict) else None
        if logged is None or len(logged) < len(advantages):
            return
        for _ in range(len(advantages)):
            logged.pop()
        logged.extend(advantages.tolist())

    def _log_step_metrics(self, counts, rewards, adv, observed) -> None:
        from cobarl import budget_metrics

        m = self._metrics["train"]
        values = {k: float(v) for k, v in observed.items() if isinstance(v, (int, float, np.floating, np.integer))}
        if M.BUDGET_MEAN not in values:  # non-main ranks, or a custom allocator object that does not report budgets
            values.update(budget_metrics(counts))
        if adv is not None:
            values.update(adv.metrics())
        failed, calls = self._step_failures
        values[M.REWARD_FAILURES] = float(failed)
        values[M.REWARD_FAILURE_FRAC] = failed / calls if calls else 0.0
        values[M.REWARD_MEAN] = float(np.mean(rewards)) if len(rewards) else float("nan")
        values[M.REWARD_STD] = float(np.std(rewards)) if len(rewards) else float("nan")
        values[M.PERF_OVERHEAD_S] = self._overhead_s
        for k, v in values.items():
            m[k].append(v)
        if m.get("frac_reward_zero_std") and adv is not None:
            m["frac_reward_zero_std"][-1] = adv.num_degenerate_groups / max(adv.num_groups, 1)
        self._rollouts_since_log += int(values[M.ROLLOUT_COUNT])
        self._generated_total += int(values[M.ROLLOUT_COUNT])

    # 4. timing and periodic eval --------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch):
        if self._step_t0 is None:
            self._step_t0 = time.perf_counter()
            self._overhead_s = 0.0
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and self._step_t0 is not None and "loss" in logs:
            elapsed = time.perf_counter() - self._step_t0
            steps = max(self.state.global_step - self._last_logged_step, 1)
            logs[M.PERF_STEP_S] = elapsed / steps
            logs[M.PERF_ROLLOUTS_PER_S] = self._rollouts_since_log / elapsed if elapsed > 0 else 0.0
            logs[M.PERF_OVERHEAD_FRAC] = self._overhead_s / elapsed if elapsed > 0 else 0.0
            self._step_t0, self._rollouts_since_log = None, 0
            self._last_logged_step = self.state.global_step
            # Only the main process evaluates: the others would repeat the same work for a log they never write.
            if (self.eval_fn is not None and self.eval_every and self.state.global_step % self.eval_every == 0
                    and self.accelerator.is_main_process):
                try:
                    logs.update({k: float(v) for k, v in self.eval_fn(self.model).items()})
                finally:
                    self.model.train()
        super().log(logs, start_time)

    # 3. checkpoint state ------------------------------------------------------------------------------
    def _generate_every(self) -> int:
        return self.args.steps_per_generation * self.num_iterations

    def _save_checkpoint(self, model, trial):
        ckpt = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        ckpt.mkdir(parents=True, exist_ok=True)
        # A checkpoint inside a generation (num_iterations > 1) keeps the generated batch: resuming must
        # reuse it, not re-plan and re-observe it. Each rank keeps its own slice.
        mid_generation = self._step % self._generate_every() != 0 and self._buffered_inputs is not None
        if mid_generation:
            write_atomic(ckpt / buffer_file(self.accelerator.process_index),
                         lambda f: torch.save(self._buffered_inputs, f), binary=True)
        if self.args.should_save:
            # Written before TRL's files, so a checkpoint with trainer_state.json always has it too.
            state = {"format": STATE_FORMAT, "version": STATE_VERSION, "global_step": self.state.global_step, "micro_step": self._step,
                     "generated": self._generated_total,
                     "world_size": self.accelerator.num_processes, "mid_generation": mid_generation,
                     "allocator": self.policy.state_dict(), "eval": getattr(self.eval_fn, "counts", dict)()}
            save_state(ckpt, state)
        super()._save_checkpoint(model, trial)

    def create_model_card(self, *args, **kwargs) -> None:
        """Not written: TRL saves its model card as ``README.md`` in ``output_dir`` on every checkpoint,
        which replaced a user's own README.md when the run folder was an existing project folder."""

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is not None and self.args.world_size > 1 and self.args.device.type == "cpu":
            with cpu_map_location():
                super()._load_optimizer_and_scheduler(checkpoint)
        else:
            super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        state = load_allocator_state(self.policy, checkpoint)
        self._last_logged_step = self.state.global_step
        self._generated_total = int(state.get("generated", 0))
        # TRL counts micro-steps from 0 after a resume; generation and buffer slicing depend on it.
        self._step = int(state.get("micro_step", self.state.global_step * self.args.gradient_accumulation_steps))
        if state.get("mid_generation"):
            saved_world = state.get("world_size", 1)
            if saved_world != self.accelerator.num_processes:
                raise RuntimeError(
                    f"{checkpoint} was written inside a generation by {saved_world} process(es); it can only be resumed "
                    f"with the same number of processes (now {self.accelerator.num_processes})"
                )
            path = Path(checkpoint) / buffer_file(self.accelerator.process_index)
            self._buffered_inputs = torch.load(path, map_location=self.accelerator.device, weights_only=False)


def load_allocator_state(allocator, checkpoint: str | os.PathLike) -> dict:
    try:
        state = load_state(checkpoint)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}: it was not written by AdaptiveGRPOTrainer or is incomplete; "
                                "resume from an earlier checkpoint") from None
    check_state_format(state, STATE_FORMAT, STATE_VERSION, unnamed_key="micro_step")
    allocator.load_state_dict(state["allocator"])
    return state
