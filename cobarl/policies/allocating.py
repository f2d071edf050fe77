"""The plan-before-generation strategies (CoBA-RL, Knapsack-RL, GVM, uniform, ...) as a policy:
one round of ``allocator.plan`` counts, every row trained, every reward observed."""

from __future__ import annotations

import numpy as np

from cobarl.allocator import Allocator, AllocatorOptions
from cobarl.policies.base import Kept, Request, RolloutPolicy, register_policy


@register_policy("allocator")
class AllocatorPolicy(RolloutPolicy):
    """A :class:`cobarl.Allocator` behind the policy protocol (its state is the allocator's own; its
    strategies are registered in :mod:`cobarl.allocator`)."""

    Options = AllocatorOptions
    single_pass = True
    decides = "before generation"

    def __init__(self, config, allocator: Allocator | None = None) -> None:
        super().__init__(config)
        self.allocator = allocator if allocator is not None else Allocator(config.options)
        self._rows: tuple[list, np.ndarray] | None = None

    def begin(self, prompt_ids: list, total_budget: int) -> Request:
        counts = self.allocator.plan(prompt_ids, total_budget).counts
        return {pid: int(c) for pid, c in zip(prompt_ids, counts.tolist()) if c > 0}

    def after_round(self, ids: list, rewards: np.ndarray) -> Request:
        self._rows = (ids, rewards)
        return {}

    def finish(self) -> Kept:
        ids, rewards = self._rows
        self.observe(ids, rewards)
        return Kept(np.arange(len(ids)))

    def observe(self, ids: list, rewards: np.ndarray) -> dict[str, float]:
        """Feed the allocator the scored rows (a row every reward function failed on, NaN, says nothing)."""
        scored = ~np.isnan(rewards)
        kept_ids = [pid for pid, ok in zip(ids, scored.tolist()) if ok]
        return self.allocator.observe(kept_ids, rewards[scored]) if kept_ids else self.allocator.metrics()

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), **self.allocator.metrics()}

    def state_dict(self) -> dict:
        return self.allocator.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.allocator.load_state_dict(state)
