"""The simulator's rollouts: common random numbers behind every reward, and what a step learns from.

Common random numbers (CRN): rollout j of a prompt in step t (j counted over the whole step, across
a policy's rounds) succeeds iff ``U < p`` for the same uniform ``U`` in every strategy, so per-seed
differences between strategies are paired. Where ``U`` comes from:

* a prompt of the step's batch (slot k), ``j < width``: ``rollout_uniforms(seed, t, M, width)[k, j]``,
  the layout the simulator always used (``width`` is the allocator's ``max_budget``, 128 unless set:
  arms compared with different ``max_budget`` share their draws only beyond it);
* otherwise (``j >= width``, or a prompt outside the batch such as DAPO's refill): element j of a
  stream of its own, seeded by (seed, step, prompt id).
"""

from __future__ import annotations

from itertools import groupby

import numpy as np


_ROLLOUT, _EXTRA = 13, 16  # stream tags (13 is the simulator's original rollout stream)


def rollout_uniforms(seed: int, step: int, prompts_per_step: int, max_budget: int) -> np.ndarray:
    """``[M, max_budget]`` uniforms behind the rewards of one step's batch (shared by all strategies)."""
    return np.random.default_rng([seed, _ROLLOUT, step]).random((prompts_per_step, max_budget))


def sample_rewards(p: np.ndarray, counts: np.ndarray, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of ``counts[k]`` rollouts of batch slot k: rollout j succeeds iff ``U[k, j] < p[k]``.

    Returns ``(rewards [N], slot [N])`` with rollouts laid out slot by slot::

        slot:    0 0 0 0 | 1 1 | 2 2 2 ...      (counts = [4, 2, 3, ...])
        column:  0 1 2 3 | 0 1 | 0 1 2 ...
    """
    slot = np.repeat(np.arange(counts.size), counts)
    starts = np.cumsum(counts) - counts
    column = np.arange(slot.size) - np.repeat(starts, counts)
    return (uniforms[slot, column] < p[slot]).astype(np.float64), slot


class StepDraws:
    """The uniforms of one step, handed out in generation order (see the module docstring).

    Attributes:
        prompts: ``[P]`` prompt ids of the step: the batch, then every other prompt a policy rolled
            out, in order of first appearance.
        slots: ``{prompt id: index into prompts}``.
    """

    def __init__(self, seed: int, step: int, batch: np.ndarray, width: int) -> None:
        self.seed, self.step, self.width = seed, step, width
        self.matrix = rollout_uniforms(seed, step, batch.size, width)
        self.batch_size = batch.size
        self.prompts = [int(pid) for pid in batch.tolist()]
        self.slots = {pid: k for k, pid in enumerate(self.prompts)}
        self.used: dict[int, int] = {}
        self._extra: dict[int, np.ndarray] = {}

    def _stream(self, pid: int, upto: int) -> np.ndarray:
        """The first ``upto`` uniforms of the prompt's own stream (a prefix of a longer draw)."""
        have = self._extra.get(pid)
        if have is None or have.size < upto:
            have = np.random.default_rng([self.seed, _EXTRA, self.step, pid]).random(max(upto, 2 * self.width))
            self._extra[pid] = have
        return have[:upto]

    def take(self, ids: list) -> tuple[np.ndarray, np.ndarray]:
        """``(uniforms [N], slot [N])`` of the rows ``ids`` (each prompt's rollouts numbered on from
        the ones it already had this step)."""
        u, slot = np.empty(len(ids)), np.empty(len(ids), dtype=np.int64)
        at = 0
        for pid, run in groupby(ids):
            pid, n = int(pid), len(list(run))
            if pid not in self.slots:
                self.slots[pid] = len(self.prompts)
                self.prompts.append(pid)
            k, a = self.slots[pid], self.used.get(pid, 0)
            b = a + n
            # rollouts a..b of a batch prompt: matrix columns below width, then its own stream (a may be past width)
            inside = max(a, min(b, self.width)) if k < self.batch_size else a
            if inside > a:
                u[at : at + inside - a] = self.matrix[k, a:inside]
            if b > inside:
                u[at + inside - a : at + n] = self._stream(pid, b)[inside:b]
            slot[at : at + n] = k
            self.used[pid], at = b, at + n
        return u, slot
