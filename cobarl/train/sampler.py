"""`PromptBatchSampler`: the generation batches of `AdaptiveGRPOTrainer` (distinct prompts, placeholder rows)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


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
