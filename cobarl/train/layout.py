"""The shape of one training step, derived once from the options and passed down, and the one check
of a strategy against it.

One optimizer step consumes one generation: ``rollouts_per_step`` rollouts trained across every
process, each process ``per_process`` of them in ``accumulation`` micro batches of ``micro_batch``.
`cobarl train` derives the layout from its options (:meth:`StepLayout.derive`) and hands it to
`AdaptiveGRPOConfig`, which only derives one itself when a Python caller gives none. Below the
policy the same number is ``total_budget`` (:func:`cobarl.policies.run_step`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cobarl.policies import PromptStream, StrategyConfig


@dataclass(frozen=True)
class StepLayout:
    """Attributes:
        prompts_per_step: distinct prompts a step trains (a policy may generate for more).
        rollouts_per_step: rollouts a step trains, all processes (the policy's ``total_budget``).
        processes: training processes.
        micro_batch: rollouts per forward/backward pass on one process.
        accumulation: micro batches per optimizer step on one process.
    """

    prompts_per_step: int
    rollouts_per_step: int
    processes: int
    micro_batch: int
    accumulation: int

    @property
    def per_process(self) -> int:
        """Rollouts each process trains per step."""
        return self.micro_batch * self.accumulation

    @classmethod
    def derive(cls, prompts_per_step: int, rollouts_per_step: int, processes: int = 1,
               micro_batch: int | None = None) -> StepLayout:
        """The layout, or ValueError with the numbers and the fix when the rollouts do not split evenly
        (``micro_batch=None``: one pass per process)."""
        r, world = rollouts_per_step, processes
        if micro_batch is None:
            if r % world:
                raise ValueError(f"rollouts_per_step ({r}) must be a multiple of the number of processes ({world}) "
                                 f"so that each process generates the same number of rollouts")
            micro_batch = r // world
        per_pass = micro_batch * world
        if r % per_pass:
            fits = [b for b in range(1, r // world + 1) if r % (b * world) == 0]
            raise ValueError(
                f"rollouts_per_step ({r}) must be a multiple of micro batch x processes = {micro_batch} x {world} "
                f"= {per_pass}; micro batch sizes that fit {world} process(es): {', '.join(map(str, fits)) or 'none'}"
                + ("" if fits else f" (make rollouts_per_step a multiple of {world})"))
        return cls(prompts_per_step, r, world, micro_batch, r // per_pass)


def check_strategy(config: StrategyConfig, layout: StepLayout, train_prompts: int | None = None) -> list[str]:
    """Build the strategy's policy and plan one step of ``layout`` with it: every option is checked by
    the code that will use it, so a value the policy refuses (kappa <= 2, a group larger than a round,
    a generation batch larger than the data, ...) fails here, before any model loads, not at step 1.
    ``train_prompts``: the data's size, which policies that draw their own prompts need (None: not
    known yet; they are checked again once it is)."""
    try:
        policy = config.policy(config)
        if policy.selects_prompts and train_prompts is None:
            return []
        if policy.selects_prompts:
            policy.stream = PromptStream(range(train_prompts))
        request = policy.begin(list(range(layout.prompts_per_step)), layout.rollouts_per_step)
    except (ValueError, TypeError) as e:
        return [f"{config.name}: {e}"]
    if policy.single_pass and sum(request.values()) != layout.rollouts_per_step:  # e.g. a callable's counts
        return [f"{config.name} planned {list(request.values())} for {layout.prompts_per_step} prompts and "
                f"{layout.rollouts_per_step} rollouts"]
    return []
