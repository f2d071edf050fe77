"""`AdaptiveGRPOConfig`: TRL's `GRPOConfig` plus the strategy and the step's layout (the trainer's
arguments; the trainer is :mod:`cobarl.train.trainer`, which checks the TRL version first)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig


def _smallest_divisor(n: int) -> int:
    return next(d for d in range(2, n + 1) if n % d == 0)


def _env_world_size() -> int:
    # torchrun and accelerate launch both set WORLD_SIZE; TRL's own checks read the same value.
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class AdaptiveGRPOConfig(GRPOConfig):
    """`GRPOConfig` plus the strategy and the step's layout.

    One optimizer step consumes one generation of ``rollouts_per_step`` rollouts trained *across all
    processes* (TRL's global ``generation_batch_size``, set from it), laid out by a
    :class:`~cobarl.train.layout.StepLayout`: ``cobarl train`` derives it once and passes ``layout``;
    a Python caller may instead give ``rollouts_per_step`` and ``per_device_train_batch_size``, and the
    layout is derived here (``gradient_accumulation_steps`` follows from it). So allocations,
    optimizer steps and schedule steps agree whatever the launch (with ``num_iterations = n``, each
    generation serves n optimizer steps). ``num_generations`` defaults to the smallest divisor >= 2
    of the budget and is only used for TRL's shape checks.
    """

    num_generations: int | None = field(
        default=None, metadata={"help": "Only for TRL's divisibility checks; default: smallest divisor >= 2 of the batch."}
    )
    rollouts_per_step: int | None = field(
        default=None, metadata={"help": "Rollouts trained per step across all processes (the fixed budget); sets "
                                "generation_batch_size."}
    )
    prompts_per_step: int = field(default=8, metadata={"help": "Distinct prompts per generation batch."})
    layout: Any = field(default=None, metadata={"help": "A cobarl.train.layout.StepLayout (cobarl train passes it); "
                                                "sets rollouts_per_step, prompts_per_step and the batch sizes."})
    strategy: Any = field(
        default="coba",
        metadata={"help": "Strategy name (cobarl.STRATEGIES), callable(pass_rates, total_budget, min_budget, max_budget)"
                  "->counts, or a cobarl.StrategyConfig."},
    )
    strategy_options: dict | None = field(
        default=None, metadata={"help": "The strategy's options (kappa, max_rounds, ...) when strategy is a name or callable."}
    )
    max_generated: int | None = field(
        default=None, metadata={"help": "Stop once this many rollouts were generated; the learning rate then decays "
                                "linearly in generated rollouts instead of steps (max_steps stays a cap)."},
    )
    reward_failure_limit: float = field(
        default=0.9, metadata={"help": "Abort when this share of a step's reward calls fail; 1 disables the check."}
    )

    def __post_init__(self):
        from cobarl.train.layout import StepLayout, check_strategy

        if self.layout is None and self.rollouts_per_step is not None:
            self.layout = StepLayout.derive(self.prompts_per_step, self.rollouts_per_step, _env_world_size(),
                                            self.per_device_train_batch_size)
        if self.layout is not None:
            layout = self.layout
            if layout.processes != _env_world_size():
                raise ValueError(f"the step layout is for {layout.processes} process(es), this launch has {_env_world_size()}")
            if self.generation_batch_size not in (None, layout.rollouts_per_step) or self.steps_per_generation is not None:
                raise ValueError(
                    "set either rollouts_per_step or generation_batch_size/steps_per_generation, not both "
                    f"(rollouts_per_step={layout.rollouts_per_step}, generation_batch_size={self.generation_batch_size})")
            if self.gradient_accumulation_steps not in (1, layout.accumulation):
                raise ValueError(
                    f"gradient_accumulation_steps={self.gradient_accumulation_steps} would split one generation of "
                    f"{layout.rollouts_per_step} rollouts over several optimizer steps; with rollouts_per_step set it is "
                    f"derived ({layout.accumulation}); leave it unset")
            self.rollouts_per_step, self.prompts_per_step = layout.rollouts_per_step, layout.prompts_per_step
            self.generation_batch_size = layout.rollouts_per_step
            self.per_device_train_batch_size, self.gradient_accumulation_steps = layout.micro_batch, layout.accumulation
        if self.num_generations is None:
            budget = self.generation_batch_size
            if budget is None:
                budget = self.per_device_train_batch_size * _env_world_size() * (self.steps_per_generation or self.gradient_accumulation_steps)
            self.num_generations = _smallest_divisor(max(budget, 2))
        super().__post_init__()
        self.rollouts_per_step = self.generation_batch_size
        if self.steps_per_generation != self.gradient_accumulation_steps:
            raise ValueError(
                f"one optimizer step must consume one generation (one allocation): steps_per_generation "
                f"({self.steps_per_generation}) != gradient_accumulation_steps ({self.gradient_accumulation_steps}); "
                "set rollouts_per_step and leave both unset"
            )
        if not 0 < self.reward_failure_limit <= 1:
            raise ValueError(f"reward_failure_limit must be in (0, 1], got {self.reward_failure_limit}")
        if self.layout is None:  # generation_batch_size given the TRL way
            self.layout = StepLayout.derive(self.prompts_per_step, self.rollouts_per_step, _env_world_size(),
                                            self.per_device_train_batch_size)
        errors = check_strategy(self.strategy_config(), self.layout)
        if errors:
            raise ValueError("; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        # Trackers (TensorBoard, W&B) serialise the arguments as JSON: a StrategyConfig, layout or callable is not.
        out = super().to_dict()
        out["strategy"] = self.strategy_config().to_dict(derived=False)
        out["layout"] = dataclasses.asdict(self.layout) if self.layout is not None else None
        return out

    def strategy_config(self):
        """The StrategyConfig of this run; an allocator's schedule length is the number of allocations."""
        from cobarl.policies import StrategyConfig

        allocations = -(-self.max_steps // self.num_iterations) if self.max_steps > 0 else None
        if isinstance(self.strategy, StrategyConfig):
            if self.strategy_options:
                raise ValueError("strategy_options cannot be combined with a StrategyConfig; set its options instead")
            cfg = self.strategy
        else:
            cfg = StrategyConfig(self.strategy, **(self.strategy_options or {}))
        return cfg.with_total_steps(allocations)
