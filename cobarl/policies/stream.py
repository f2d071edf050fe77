"""The data as a stream of prompts, and the rules every policy that draws its own prompts shares
(DAPO's dynamic sampling, GRESO's on top of it; any new one): which groups a round keeps, how the
step's kept groups become its trained rows (with the public GRPO's baselines), and when drawing
another batch is refused.

The filter and the cap are DAPO's, written from ``verl-project/verl-recipe`` at 59fa05c,
``dapo/dapo_ray_trainer.py`` (``RayDAPOTrainer.fit``, the ``filter_groups`` block); GRESO's public code
has a filter of its own (:func:`cobarl.policies.greso.greso_keeps_group`) and no cap. Both train verl's
GRPO advantage (:func:`kept_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cobarl.options import option
from cobarl.policies.base import Kept
from cobarl.policies.torch_stats import grpo_baseline
from cobarl.stats import as_id_list


class PromptStream:
    """The data as a stream of prompt ids: a seeded permutation per epoch, read in order.

    Policies that draw more prompts than the trainer's batch (DAPO's refill) read it; its position
    is part of the policy's state, so a resumed run draws the same prompts.
    """

    def __init__(self, prompt_ids: Sequence[Any], seed: int = 0) -> None:
        self.ids, self.seed = as_id_list(prompt_ids), seed
        if not self.ids:
            raise ValueError("a prompt stream needs at least one prompt")
        self.epoch, self.position = 0, 0
        self._cached: tuple[int | None, list] = (None, [])

    def _order(self) -> list:
        """This epoch's order (computed once per epoch: GRESO draws one prompt at a time)."""
        if self._cached[0] != self.epoch:
            perm = np.random.default_rng([self.seed, 7, self.epoch]).permutation(len(self.ids))
            self._cached = (self.epoch, [self.ids[i] for i in perm])
        return self._cached[1]

    def take(self, k: int, exclude: set | frozenset | dict = frozenset()) -> list:
        """The next ``k`` distinct prompt ids not in ``exclude``; an epoch's remainder is used before the next
        epoch starts, and an id already taken is passed over."""
        if k > len(self.ids) - len(exclude):
            raise ValueError(f"cannot draw {k} more distinct prompts from {len(self.ids)} when {len(exclude)} are "
                             "already taken; use fewer prompts per batch")
        out: list = []
        taken: set = set(exclude)
        while len(out) < k:
            order = self._order()
            while self.position < len(order) and len(out) < k:
                pid = order[self.position]
                self.position += 1
                if pid not in taken:
                    taken.add(pid)
                    out.append(pid)
            if self.position >= len(order):
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def take_batch(self, k: int) -> list:
        """The next ``k`` prompts of one epoch, as a ``drop_last`` dataloader hands out its batches (DAPO's
        generation batch): when fewer than ``k`` are left in this epoch they are skipped and the batch starts
        the next one, so a batch never spans two epochs."""
        if not 1 <= k <= len(self.ids):
            raise ValueError(f"a batch of {k} prompts from {len(self.ids)}: it needs 1 to {len(self.ids)}")
        if len(self.ids) - self.position < k:
            self.epoch, self.position = self.epoch + 1, 0
        out = self._order()[self.position : self.position + k]
        self.position += k
        if self.position >= len(self.ids):
            self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "size": len(self.ids)}

    @staticmethod
    def state_problem(state: Any) -> str | None:
        """What is wrong with a saved stream state (missing fields, a position beyond its data), or None."""
        if not isinstance(state, dict):
            return f"is {type(state).__name__}, not a mapping"
        missing = [k for k in ("epoch", "position", "size") if not isinstance(state.get(k), int) or state[k] < 0]
        if missing:
            return "lacks " + ", ".join(map(repr, missing)) + " (or they are not counts)"
        if state["position"] >= max(state["size"], 1):  # take() starts the next epoch at the end of the data
            return f"position {state['position']} is beyond its {state['size']} prompts"
        return None

    def load_state_dict(self, state: dict) -> None:
        problem = self.state_problem(state)
        if problem:
            raise ValueError(f"prompt stream state {problem}: it was damaged")
        if state["size"] != len(self.ids):
            raise ValueError(f"prompt stream state was saved for {state['size']} prompts, this run has {len(self.ids)}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


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


def kept_groups(kept: list[tuple[Any, list[int], np.ndarray]]) -> Kept:
    """The kept groups ``(prompt id, step rows, rewards)`` as the rows a step trains: each group its own
    label, so a prompt drawn again after the data's epoch ended (the public trainers do so too) trains as a
    group of its own, not merged with its first draw; and each group's baseline, keyed (prompt id, label),
    as the public recipe's GRPO computes it (:func:`~cobarl.policies.torch_stats.grpo_baseline`: verl's
    ``compute_grpo_outcome_advantage`` with ``norm_adv_by_std_in_grpo``, in float32): the advantage is
    (r - mean) / (std + 1e-6), a group of one keeps its raw reward."""
    rows = [r for _, group, _ in kept for r in group]
    labels = [k for k, (_, group, _) in enumerate(kept) for _ in group]
    baselines = {(pid, k): grpo_baseline(values) for k, (pid, _, values) in enumerate(kept)}
    return Kept(np.asarray(rows, dtype=np.int64), baselines, scale_by_std=True,
                groups=np.asarray(labels, dtype=np.int64), float32=True)


def round_groups(ids: list, offset: int) -> dict:
    """``{prompt_id: [step row indices]}`` of one round's rows, which start at step row ``offset``."""
    groups: dict = {}
    for j, pid in enumerate(ids):
        groups.setdefault(pid, []).append(offset + j)
    return groups


def max_gen_batches_option():
    """The cap every stream policy declares, one declaration so its flag means one thing."""
    return option(10, "DAPO, GRESO: most generation batches (rounds) per step before the step fails (DAPO's public "
                  "default 10; GRESO's code has no cap; 0 = no cap).", ge=0)
