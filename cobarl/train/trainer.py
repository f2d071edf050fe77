"""`AdaptiveGRPOTrainer`: TRL's `GRPOTrainer` with per-prompt rollout budgets.

Tested against TRL >=1.14,<1.17 (the private hooks below drift between TRL minors; see
``SUPPORTED_TRL``). Four hooks change; everything else is TRL's:

1. ``_get_train_sampler`` returns a :class:`PromptBatchSampler`: each generation batch holds
   ``prompts_per_step`` distinct prompts laid out in ``rollouts_per_step`` placeholder rows.
2. ``_generate_and_score_completions`` (train mode) asks the allocator for per-prompt counts at the
   moment the batch is generated -- so the allocation always sees the latest statistics, even though
   the dataloader prefetches -- re-lays the rows out as each prompt repeated ``counts[i]`` times,
   lets TRL generate and score them, then replaces TRL's ``view(-1, num_generations)`` advantages
   with group-id advantages and feeds the gathered rewards to the allocator::

       sampler rows   p3 p3 p3 p3 p8 p8 p8 p8 p1 p1 p1 p1      (placeholders, 3 prompts x 4)
       allocation     p3: 2        p8: 7          p1: 3         (sums to 12, each in [min, max])
       generated      p3 p3 p8 p8 p8 p8 p8 p8 p8 p1 p1 p1      (group id = prompt id)

3. ``_save_checkpoint`` writes ``cobarl_state.json`` (allocator state) atomically into the
   checkpoint directory before TRL writes ``trainer_state.json``; ``_load_optimizer_and_scheduler``
   restores it on resume.
4. ``log`` adds ``perf/step_s``, ``perf/rollouts_per_s`` and periodic ``eval/*`` accuracy.

``num_generations`` only has to satisfy TRL's divisibility checks (it is set to a divisor of the
batch); TRL still uses it in ``view(-1, num_generations)`` for ``frac_reward_zero_std`` (which we
overwrite) and for vLLM *server* mode (refused). With ``loss_type="dapo"`` (TRL's default) every
token counts once, so a prompt with more rollouts carries proportionally more weight in the loss.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from packaging.version import Version
from torch.utils.data import Sampler

import trl
from trl import GRPOConfig, GRPOTrainer

SUPPORTED_TRL = (Version("1.14"), Version("1.17"))  # [min, max)
STATE_FILE = "cobarl_state.json"
PROMPT_ID = "prompt_id"
TRL_EPS = 1e-4  # TRL divides by (std + 1e-4)

if not SUPPORTED_TRL[0] <= Version(trl.__version__) < SUPPORTED_TRL[1]:  # pragma: no cover
    raise ImportError(
        f"cobarl.train needs trl>={SUPPORTED_TRL[0]},<{SUPPORTED_TRL[1]} (it overrides private GRPOTrainer hooks); "
        f"found trl {trl.__version__}. Install a supported version: pip install 'trl>=1.14,<1.17'"
    )


def _smallest_divisor(n: int) -> int:
    return next(d for d in range(2, n + 1) if n % d == 0)


@dataclass
class AdaptiveGRPOConfig(GRPOConfig):
    """`GRPOConfig` plus the budget-allocation options.

    The per-step budget is TRL's ``generation_batch_size`` (set it directly or via
    ``rollouts_per_step``); ``num_generations`` defaults to the smallest divisor >= 2 of it and is
    only used for TRL's shape checks.
    """

    num_generations: int | None = field(
        default=None, metadata={"help": "Only for TRL's divisibility checks; default: smallest divisor >= 2 of the batch."}
    )
    rollouts_per_step: int | None = field(
        default=None, metadata={"help": "Total rollouts per step (the fixed budget); sets generation_batch_size."}
    )
    prompts_per_step: int = field(default=8, metadata={"help": "Distinct prompts per generation batch."})
    allocator: Any = field(
        default="coba", metadata={"help": "Allocator name (see cobarl.allocator) or callable(pass_rates, total_budget, min_budget, max_budget)->counts."}
    )
    min_budget: int = field(default=2, metadata={"help": "Fewest rollouts per drawn prompt."})
    max_budget: int = field(default=128, metadata={"help": "Most rollouts per prompt."})
    kappa: float = field(default=11.0, metadata={"help": "Capability Beta concentration."})
    window: int = field(default=1, metadata={"help": "Capability moving-average window (steps)."})
    gamma: float = field(default=10.0, metadata={"help": "Capability mapping sharpness."})
    tau: Any = field(default=8.0, metadata={"help": "Allocation temperature (float or 'adaptive')."})
    allocator_options: dict | None = field(
        default=None, metadata={"help": "Extra AllocatorConfig fields (e.g. fixed_alpha, fixed_beta, total_steps)."}
    )

    def __post_init__(self):
        if self.rollouts_per_step is not None:
            if self.generation_batch_size not in (None, self.rollouts_per_step) or self.steps_per_generation is not None:
                raise ValueError(
                    "set either rollouts_per_step or generation_batch_size/steps_per_generation, not both "
                    f"(rollouts_per_step={self.rollouts_per_step}, generation_batch_size={self.generation_batch_size})"
                )
            self.generation_batch_size = self.rollouts_per_step
        if self.num_generations is None:
            budget = self.generation_batch_size
            if budget is None:
                world = int(os.environ.get("WORLD_SIZE", "1"))
                budget = self.per_device_train_batch_size * world * (self.steps_per_generation or self.gradient_accumulation_steps)
            self.num_generations = _smallest_divisor(max(budget, 2))
        super().__post_init__()
        self.rollouts_per_step = self.generation_batch_size
        budget, p = self.generation_batch_size, self.prompts_per_step
        if self.min_budget < 2:
            raise ValueError(f"min_budget must be >= 2 (a group of one has no baseline), got {self.min_budget}")
        if budget < self.min_budget * p:
            raise ValueError(
                f"budget cannot be met: {budget} rollouts per step < min_budget x prompts_per_step = "
                f"{self.min_budget} x {p}; raise rollouts_per_step or lower prompts_per_step"
            )
        if budget > self.max_budget * p:
            raise ValueError(
                f"budget cannot be met: {budget} rollouts per step > max_budget x prompts_per_step = "
                f"{self.max_budget} x {p}; raise max_budget or prompts_per_step"
            )

    def allocator_config(self):
        from cobarl.allocator import AllocatorConfig

        return AllocatorConfig(
            strategy=self.allocator, min_budget=self.min_budget, max_budget=self.max_budget, kappa=self.kappa,
            window=self.window, gamma=self.gamma, tau=self.tau,
            **{"total_steps": self.max_steps if self.max_steps > 0 else None, **(self.allocator_options or {})},
        )


class PromptBatchSampler(Sampler[int]):
    """Yields dataset indices for generation batches of ``prompts_per_step`` distinct prompts.

    Each batch is ``rows_per_step`` placeholder rows (prompt ``j`` fills a contiguous block of about
    ``rows_per_step / prompts_per_step`` rows); the trainer re-lays them out by the allocation when
    it generates. Order is a pure function of ``(seed, epoch)`` -- no allocator state -- so resuming
    (which fast-forwards the dataloader) reproduces it, and prefetching cannot make allocations lag.
    Each batch is yielded ``repeat_count`` times (TRL's ``steps_per_generation * num_iterations``).
    """

    def __init__(self, num_prompts: int, prompts_per_step: int, rows_per_step: int, *, repeat_count: int = 1, seed: int = 0):
        if prompts_per_step > num_prompts:
            raise ValueError(f"prompts_per_step ({prompts_per_step}) exceeds the number of training prompts ({num_prompts})")
        self.num_prompts, self.prompts_per_step, self.rows_per_step = num_prompts, prompts_per_step, rows_per_step
        self.repeat_count, self.seed, self.epoch = repeat_count, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches of distinct prompt indices."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_prompts).tolist()
        p = self.prompts_per_step
        return [order[i : i + p] for i in range(0, self.num_prompts - p + 1, p)]

    def __iter__(self) -> Iterator[int]:
        rows = np.array_split(np.arange(self.rows_per_step), self.prompts_per_step)
        for chunk in self.batches():
            layout = [idx for idx, block in zip(chunk, rows) for _ in block]
            for _ in range(self.repeat_count):
                yield from layout

    def __len__(self) -> int:
        return (self.num_prompts // self.prompts_per_step) * self.rows_per_step * self.repeat_count


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class AdaptiveGRPOTrainer(GRPOTrainer):
    """GRPO with a per-prompt rollout budget chosen every step by a `cobarl` allocator.

    Args:
        model, reward_funcs, train_dataset, **kwargs: as for `trl.GRPOTrainer`. ``train_dataset``
            must be map-style; a ``prompt_id`` column (unique int or str ids) is added from the row
            index if absent.
        args (`AdaptiveGRPOConfig`): TRL options plus the allocation options.
        allocator (`cobarl.allocator.Allocator`, *optional*): use this allocator instead of building
            one from ``args``.
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
        if args.use_vllm and args.vllm_mode == "server" and kwargs.get("rollout_func") is None:
            raise ValueError(
                "vLLM server mode cannot serve variable per-prompt budgets: TRL dedupes prompts by a fixed "
                "num_generations and asks the server for n=num_generations each. Use vllm_mode='colocate', "
                "or pass rollout_func= that generates one completion per row."
            )
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
        if allocator is None:
            from cobarl.allocator import Allocator

            allocator = Allocator(args.allocator_config())
        self.allocator = allocator
        self.eval_fn, self.eval_every = eval_fn, eval_every
        self._step_t0: float | None = None
        self._overhead_s = 0.0
        self._rollouts_since_log = 0
        self._last_logged_step = 0
        self._last_plan = None  # (prompt_ids, counts) of the latest allocation, for tests and debugging
        self._batch_ids: list | None = None  # global prompt id of each generated row
        self._rewards_per_func: torch.Tensor | None = None
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset, **kwargs)

    # 1. sampler ------------------------------------------------------------------------------------
    def _get_train_sampler(self, dataset=None) -> Sampler:
        dataset = self.train_dataset if dataset is None else dataset
        return PromptBatchSampler(
            len(dataset),
            self.args.prompts_per_step,
            self.args.generation_batch_size,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            seed=self.args.seed,
        )

    # 2. allocation, advantages, statistics ----------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func  # gathered: one row per rollout on every process
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        t0 = time.perf_counter()
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if world > 1:
            from accelerate.utils import gather_object

            all_rows = gather_object(inputs)
        else:
            all_rows = list(inputs)
        by_id = {}
        for row in all_rows:
            by_id.setdefault(row[PROMPT_ID], row)
        prompt_ids = list(by_id)
        plan = self.allocator.plan(prompt_ids, len(all_rows))
        counts = np.asarray(plan.counts, dtype=np.int64)
        if counts.sum() != len(all_rows) or len(counts) != len(prompt_ids):
            raise RuntimeError(f"allocator returned counts {counts.tolist()} for {len(prompt_ids)} prompts and budget {len(all_rows)}")
        rows = [dict(by_id[pid]) for pid, c in zip(prompt_ids, counts.tolist()) for _ in range(c)]
        self._batch_ids = [row[PROMPT_ID] for row in rows]
        self._last_plan = (prompt_ids, counts)
        local = len(inputs)
        overhead = time.perf_counter() - t0

        output = super()._generate_and_score_completions(rows[rank * local : (rank + 1) * local])

        t1 = time.perf_counter()
        rewards = self._scalar_rewards(self._rewards_per_func)
        adv = self._advantages(rewards, self._batch_ids)
        device = output["advantages"].device
        output["advantages"] = torch.as_tensor(adv.advantages[rank * local : (rank + 1) * local], dtype=torch.float32, device=device)
        self._replace_logged_advantages(adv.advantages)
        observed = self.allocator.observe(self._batch_ids, rewards) or {}
        overhead += time.perf_counter() - t1
        self._overhead_s += overhead
        self._log_step_metrics(counts, rewards, adv, observed, plan)
        return output

    def _advantages(self, rewards: np.ndarray, group_ids: list):
        """Group-id advantages with TRL's ``scale_rewards`` semantics and TRL's eps (1e-4)."""
        from cobarl.advantages import group_advantages

        if self.scale_rewards == "batch":
            adv = group_advantages(rewards, group_ids, scale="none", eps=TRL_EPS)
            std = float(np.std(rewards, ddof=1)) if len(rewards) > 1 else 0.0
            return dataclasses.replace(adv, advantages=adv.advantages / (std + TRL_EPS))
        return group_advantages(rewards, group_ids, scale=self.scale_rewards, eps=TRL_EPS)

    def _scalar_rewards(self, rewards_per_func: torch.Tensor) -> np.ndarray:
        """Weighted sum over reward functions (as TRL does); a rollout no function could score is an error."""
        rpf = rewards_per_func.detach().float().cpu()
        unscorable = torch.isnan(rpf).all(dim=1)
        if unscorable.any():
            i = int(unscorable.nonzero()[0, 0])
            pid = self._batch_ids[i]
            raise ValueError(
                f"reward is NaN for rollout {i} of prompt {pid!r} (no reward function returned a number); "
                "fix the verifier or the ground truth of that prompt"
            )
        weights = self.reward_weights.detach().float().cpu()
        return (rpf * weights.unsqueeze(0)).nansum(dim=1).double().numpy()

    def _replace_logged_advantages(self, advantages: np.ndarray) -> None:
        logged = self._logs.get("advantages") if isinstance(self._logs, dict) else None
        if logged is None or len(logged) < len(advantages):
            return
        for _ in range(len(advantages)):
            logged.pop()
        logged.extend(advantages.tolist())

    def _log_step_metrics(self, counts, rewards, adv, observed, plan) -> None:
        from cobarl import budget_metrics

        m = self._metrics["train"]
        values = {k: float(v) for k, v in observed.items() if isinstance(v, (int, float, np.floating, np.integer))}
        if "budget/mean" not in values:  # a custom allocator object may not report its budgets
            values.update(budget_metrics(counts))
        values.update(adv.metrics())
        values["rollout/count"] = float(len(rewards))
        values["reward/mean"] = float(np.mean(rewards))
        values["reward/std"] = float(np.std(rewards))
        values["adv/abs_mean"] = float(np.mean(np.abs(adv.advantages)))
        values["perf/overhead_s"] = self._overhead_s
        for k, v in values.items():
            m[k].append(v)
        if m.get("frac_reward_zero_std"):
            m["frac_reward_zero_std"][-1] = adv.num_degenerate_groups / max(adv.num_groups, 1)
        self._rollouts_since_log += len(rewards)

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
            logs["perf/step_s"] = elapsed / steps
            logs["perf/rollouts_per_s"] = self._rollouts_since_log / elapsed if elapsed > 0 else 0.0
            logs["perf/overhead_frac"] = self._overhead_s / elapsed if elapsed > 0 else 0.0
            self._step_t0, self._rollouts_since_log = None, 0
            self._last_logged_step = self.state.global_step
            if self.eval_fn is not None and self.eval_every and self.state.global_step % self.eval_every == 0:
                try:
                    logs.update({f"eval/{k}": float(v) for k, v in self.eval_fn(self.model).items()})
                finally:
                    self.model.train()
        super().log(logs, start_time)

    # 3. checkpoint state ------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        if self.args.should_save:
            # Written before TRL's files, so a checkpoint with trainer_state.json always has it too.
            ckpt = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            ckpt.mkdir(parents=True, exist_ok=True)
            state = {"global_step": self.state.global_step, "allocator": self.allocator.state_dict()}
            _write_json_atomic(ckpt / STATE_FILE, state)
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            load_allocator_state(self.allocator, checkpoint)
            self._last_logged_step = self.state.global_step


def load_allocator_state(allocator, checkpoint: str | os.PathLike) -> dict:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the checkpoint was not written by AdaptiveGRPOTrainer or is incomplete; "
            "resume from an earlier checkpoint"
        )
    state = json.loads(path.read_text())
    allocator.load_state_dict(state["allocator"])
    return state


def last_complete_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The highest ``checkpoint-N`` in ``run_dir`` that has both TRL's and cobarl's state files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    found = []
    for p in run_dir.glob("checkpoint-*"):
        suffix = p.name.split("-", 1)[1]
        if p.is_dir() and suffix.isdigit() and (p / STATE_FILE).is_file() and (p / "trainer_state.json").is_file():
            found.append((int(suffix), p))
    return max(found)[1] if found else None
