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


def refuse_another_batch(policy: str, batches: int, cap: int, option: str, kept: int, want: int, unkept: int,
                         data: int) -> None:
    """Raise the public trainer's error once ``batches`` generation batches reached ``cap`` (``option``).
    Without a cap, refuse once the step has drawn more prompts than the data hold (``data``) since it last
    kept a group (``unkept``): a whole pass found no mixed group, so the public trainer would loop
    forever ("endless trials")."""
    if too_many_batches(batches, cap):
        raise RuntimeError(
            f"{policy} generated {batches} generation batches ({option}) and kept only {kept} of the {want} prompts a "
            "step trains on: nearly every group has one reward value. The data are too easy or too hard for this "
            f"model; raise {option} (0 = no cap) or filter the data")
    if cap <= 0 and unkept > data:
        raise RuntimeError(
            f"{policy} drew {unkept} prompts in this step since it last kept one, more than the {data} of the data, and "
            f"kept only {kept} of the {want} it trains on: no prompt has mixed rewards any more; set {option} to stop "
            "earlier, or filter the data")


def stream_step(policy: str, prompt_ids: list, total_budget: int, stream) -> tuple[int, int]:
    """(rollouts per prompt, prompts trained) of a step whose prompts are drawn from ``stream``."""
    if total_budget % len(prompt_ids):
        raise ValueError(f"{policy} trains n = total_budget / prompts rollouts per prompt; got total_budget {total_budget} "
                         f"for {len(prompt_ids)} prompts")
    if stream is None:
        raise RuntimeError(f"{policy} draws its prompts from a PromptStream; the trainer must set policy.stream")
    return total_budget // len(prompt_ids), len(prompt_ids)


def kept_groups(kept: list[list[int]]) -> Kept:
    """The kept groups' rows, each group its own label: a prompt drawn again after the data's epoch ended
    (the public trainers do so too) trains as a group of its own, not merged with its first draw."""
    rows = [r for group in kept for r in group]
    labels = [k for k, group in enumerate(kept) for _ in group]
    return Kept(np.asarray(rows, dtype=np.int64), groups=np.asarray(labels, dtype=np.int64))


def round_groups(ids: list, offset: int) -> dict:
    """``{prompt_id: [step row indices]}`` of one round's rows, which start at step row ``offset``."""
    groups: dict = {}
    for j, pid in enumerate(ids):
        groups.setdefault(pid, []).append(offset + j)
    return groups


class DapoPolicy(RolloutPolicy):
    """Each round is one DAPO generation batch: ``gen_batch_factor x prompts`` new prompts from the
    data stream, n rollouts each (n = total_budget / prompts). Groups with one reward value are
    dropped; the step ends once ``prompts`` groups were kept (the surplus of the last batch is
    discarded) and fails after ``max_gen_batches`` batches, as the public trainer does.

    The trainer's own batch only sets how many prompts train: every prompt comes from the stream,
    so the prompts a step consumes are the ones it generated for (``rollout/prompts``)."""

    needs_stream = True

    def begin(self, prompt_ids: list, total_budget: int) -> Request:
        self.n, self.want = stream_step("dapo", prompt_ids, total_budget, self.stream)
        batch, data = self.config.gen_batch_factor * self.want, len(self.stream.ids)
        if batch > data:  # the options that make the batch, so the message says what to lower
            raise ValueError(f"dapo's generation batch, --gen-batch-factor {self.config.gen_batch_factor} x --prompts-per-step "
                             f"{self.want} = {batch} prompts, is larger than the {data} training prompts; lower either option")
        self.kept: list[list[int]] = []
        self.batches, self.seen_rows, self.drawn, self.last_kept_at = 0, 0, 0, 0
        return self._next_batch()

    def _next_batch(self) -> Request:
        self.batches += 1
        batch = self.stream.take(self.config.gen_batch_factor * self.want)
        self.drawn += len(batch)
        return {pid: self.n for pid in batch}

    def after_round(self, ids: list, rewards: np.ndarray) -> Request:
        for rows in round_groups(ids, self.seen_rows).values():
            if keeps_group(np.nan_to_num(rewards[np.asarray(rows) - self.seen_rows], nan=0.0)):
                self.kept.append(rows)
                self.last_kept_at = self.drawn
        self.seen_rows += len(ids)
        if len(self.kept) >= self.want:
            return {}
        refuse_another_batch("dapo", self.batches, self.config.max_gen_batches, "max_gen_batches", len(self.kept), self.want,
                             self.drawn - self.last_kept_at, len(self.stream.ids))
        return self._next_batch()

    def finish(self) -> Kept:
        return kept_groups(self.kept[: self.want])
