"""DAPO dynamic sampling (arXiv 2503.14476): drop prompt groups whose rewards are all equal and
refill from new prompts until the step's batch is full.

Written from ``verl-project/verl-recipe`` at 59fa05c, ``dapo/dapo_ray_trainer.py``
(``RayDAPOTrainer.fit``, the ``filter_groups`` block), and checked on vectors that code produced
(``tests/data/parity_dapo.json``).
"""

from __future__ import annotations

import numpy as np

from cobarl.policies.base import Kept, Request, RolloutPolicy


def keeps_group(values: np.ndarray) -> bool:
    """The public filter: a group trains when its metric's (population) std is above 0, or it has one row."""
    v = np.asarray(values, dtype=np.float64)
    return v.size == 1 or float(np.std(v)) > 0


def too_many_batches(num_gen_batches: int, max_gen_batches: int) -> bool:
    """Whether another generation batch is refused (``max_gen_batches <= 0``: no cap)."""
    return max_gen_batches > 0 and num_gen_batches >= max_gen_batches


class DapoPolicy(RolloutPolicy):
    """Each round is one DAPO generation batch: ``gen_batch_factor x prompts`` new prompts from the
    data stream, n rollouts each (n = total_budget / prompts). Groups with one reward value are
    dropped; the step ends once ``prompts`` groups were kept (the surplus of the last batch is
    discarded) and fails after ``max_gen_batches`` batches, as the public trainer does.

    The trainer's own batch only sets how many prompts train: every prompt comes from the stream,
    so the prompts a step consumes are the ones it generated for (``rollout/prompts``)."""

    needs_stream = True

    def begin(self, prompt_ids: list, total_budget: int) -> Request:
        if total_budget % len(prompt_ids):
            raise ValueError(f"dapo trains n = total_budget / prompts rollouts per prompt; got total_budget {total_budget} "
                             f"for {len(prompt_ids)} prompts")
        if self.stream is None:
            raise RuntimeError("dapo draws its prompts from a PromptStream; the trainer must set policy.stream")
        self.n, self.want = total_budget // len(prompt_ids), len(prompt_ids)
        self.kept: list[list[int]] = []
        self.batches, self.seen_rows = 0, 0
        return self._next_batch()

    def _next_batch(self) -> Request:
        self.batches += 1
        return {pid: self.n for pid in self.stream.take(self.config.gen_batch_factor * self.want)}

    def after_round(self, ids: list, rewards: np.ndarray) -> Request:
        groups: dict = {}
        for j, pid in enumerate(ids):
            groups.setdefault(pid, []).append(self.seen_rows + j)
        for rows in groups.values():
            if keeps_group(np.nan_to_num(rewards[np.asarray(rows) - self.seen_rows], nan=0.0)):
                self.kept.append(rows)
        self.seen_rows += len(ids)
        if len(self.kept) >= self.want:
            return {}
        if too_many_batches(self.batches, self.config.max_gen_batches):
            raise RuntimeError(
                f"dapo generated {self.batches} generation batches (max_gen_batches) and kept only {len(self.kept)} of "
                f"the {self.want} prompts a step trains on: nearly every group has one reward value. The data are too "
                "easy or too hard for this model; raise max_gen_batches (0 = no cap) or filter the data")
        return self._next_batch()

    def finish(self) -> Kept:
        return Kept(np.asarray([r for rows in self.kept[: self.want] for r in rows], dtype=np.int64))
