"""A run budget in generated rollouts (``max_generated``) for `AdaptiveGRPOTrainer`.

Policies that generate more than they train on (Reinforce-Ada, DAPO, PODS, GRESO) are compared fairly at
equal *generated* rollouts. With ``max_generated`` set, the run ends at the first step after which
that many rollouts were generated, and the learning rate decays linearly in generated rollouts,
``lr * (1 - generated / max_generated)``: for a policy that generates the same every step this is
the usual linear schedule over ``max_generated / rollouts_per_step`` steps, and a policy that
spends more per step anneals (and stops) after fewer steps instead of stopping at a high rate.
"""

from __future__ import annotations

from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback


class GeneratedBudgetMixin:
    """`create_scheduler` and the stop for ``args.max_generated`` (nothing changes when it is None)."""

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        budget = self.args.max_generated
        if budget is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.args.lr_scheduler_type != "linear" or self.args.warmup_steps:
            raise ValueError("max_generated replaces the linear schedule without warm-up; lr_scheduler_type "
                             f"{self.args.lr_scheduler_type} (warm-up {self.args.warmup_steps}) cannot follow generated rollouts")
        if self.lr_scheduler is None:
            self.lr_scheduler = LambdaLR(optimizer or self.optimizer,
                                         lambda _step: max(0.0, 1.0 - self._generated_total / budget))
            self._created_lr_scheduler = True
        return self.lr_scheduler


class StopAtGenerated(TrainerCallback):
    """Ends training (with a checkpoint) once the trainer generated ``max_generated`` rollouts."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        # With num_iterations > 1 a generation serves several optimizer steps: stop after its last one.
        boundary = state.global_step % args.num_iterations == 0
        if args.max_generated is not None and boundary and self.trainer._generated_total >= args.max_generated:
            control.should_training_stop = True
            control.should_save = True
        return control
