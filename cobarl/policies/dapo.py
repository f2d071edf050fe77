"""DAPO dynamic sampling (arXiv 2503.14476): drop prompt groups whose rewards are all equal and
refill from new prompts until the step's batch is full.

Written from ``verl-project/verl-recipe`` at 59fa05c, ``dapo/dapo_ray_trainer.py``
(``RayDAPOTrainer.fit``, the ``filter_groups`` block), and checked on vectors that code produced
(``tests/data/parity_dapo.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cobarl.options import OptionSet, option
from cobarl.policies.base import Kept, Request, RolloutPolicy, register_policy
from cobarl.policies.stream import keeps_group, kept_groups, max_gen_batches_option, refuse_another_batch, round_groups, stream_step
from cobarl.strategies import register_strategy


@dataclass(frozen=True)
class DapoOptions(OptionSet):
    """DAPO's options (``test_dapo_7b.sh`` settings)."""

    gen_batch_factor: int = option(
        3, "DAPO: prompts per generation batch, as a multiple of the prompts trained per step (public: 3).", ge=1)
    max_gen_batches: int = max_gen_batches_option()


@register_policy("dapo")
class DapoPolicy(RolloutPolicy):
    """Each round is one DAPO generation batch: ``gen_batch_factor x prompts`` new prompts from the
    data stream, n rollouts each (n = total_budget / prompts). Groups with one reward value are
    dropped; the step ends once ``prompts`` groups were kept (the surplus of the last batch is
    discarded) and fails after ``max_gen_batches`` batches, as the public trainer does. A generation
    batch is one epoch's (the public ``drop_last`` dataloader's); the kept groups train with the public
    recipe's GRPO advantage (:func:`~cobarl.policies.stream.kept_groups`).

    The trainer's own batch only sets how many prompts train: every prompt comes from the stream,
    so the prompts a step consumes are the ones it generated for (``rollout/prompts``)."""

    Options = DapoOptions
    selects_prompts = True
    own_baselines = True  # the recipe's GRPO: (r - mean) / (std + 1e-6) per kept group, float32
    baseline_scale = "group"
    baselines_are = ("each kept group's mean and unbiased std, as the public recipe's GRPO: (r - mean) / (std + 1e-6), "
                     "a group of one its raw reward")
    verl_native = True  # verl's algorithm.filter_groups

    def begin(self, prompt_ids: list, total_budget: int) -> Request:
        self.n, self.want = stream_step("dapo", prompt_ids, total_budget, self.stream)
        batch, data = self.options.gen_batch_factor * self.want, len(self.stream.ids)
        if batch > data:  # the options that make the batch, so the message says what to lower
            raise ValueError(f"dapo's generation batch, --gen-batch-factor {self.options.gen_batch_factor} x --prompts-per-step "
                             f"{self.want} = {batch} prompts, is larger than the {data} training prompts; lower either option")
        self.kept: list[tuple] = []  # (prompt id, step rows, rewards) of each kept group
        self.batches, self.seen_rows, self.drawn, self.last_kept_at = 0, 0, 0, 0
        return self._next_batch()

    def _next_batch(self) -> Request:
        self.batches += 1
        batch = self.stream.take_batch(self.options.gen_batch_factor * self.want)
        self.drawn += len(batch)
        return {pid: self.n for pid in batch}

    def after_round(self, ids: list, rewards: np.ndarray) -> Request:
        for pid, rows in round_groups(ids, self.seen_rows).items():
            values = np.nan_to_num(rewards[np.asarray(rows) - self.seen_rows], nan=0.0)
            if keeps_group(values):
                self.kept.append((pid, rows, values))
                self.last_kept_at = self.drawn
        self.seen_rows += len(ids)
        if len(self.kept) >= self.want:
            return {}
        refuse_another_batch("dapo", self.batches, self.options.max_gen_batches, "max_gen_batches", len(self.kept), self.want,
                             self.drawn - self.last_kept_at, len(self.stream.ids))
        return self._next_batch()

    def finish(self) -> Kept:
        return kept_groups(self.kept[: self.want])


register_strategy("dapo", "dapo", "DAPO dynamic sampling: drop groups whose rewards are all equal, refill from new prompts")
