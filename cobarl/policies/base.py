"""The rollout-policy protocol: one step's rollouts, decided at four points.

    select   which prompts the step rolls out: the trainer's batch, or more drawn from a
             :class:`PromptStream` (DAPO's refill)
    plan     how many rollouts each prompt gets first            -> :meth:`RolloutPolicy.begin`
    rounds   after a round's rewards: more for some prompts, or stop -> :meth:`RolloutPolicy.after_round`
    keep     which generated rows enter the loss, with which per-prompt baseline
             -> :meth:`RolloutPolicy.finish` (it also updates the policy's per-prompt state from
             every generated reward, kept or not)

Trainers drive a step with :func:`run_step`, giving it ``generate(ids) -> rewards``: roll out one
row per entry of ``ids`` (a prompt id, repeated) in one generation call, score them, and return
their rewards in the same order. A request is an ordered ``{prompt_id: count}``; its rows are each
prompt repeated ``count`` times, in the request's order. Rows are numbered over the whole step in
generation order (round 1's rows, then round 2's, ...), which is what :class:`Kept` indexes.

The policy's decisions are a function of the rewards it was given and its own state; trainers with
several processes give every rank the same gathered rewards (or decide on one rank and broadcast),
so the state is identical on every rank and saved once in checkpoints (:meth:`state_dict`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.io import check_state_format
from cobarl.stats import as_id_list

Request = dict  # {prompt_id: rollouts to generate now}, in generation order


@dataclass(frozen=True)
class Kept:
    """What a step trains on.

    Attributes:
        rows: indices into the step's generated rows, in training order.
        baselines: ``{prompt_id: (mean, std)}`` to centre (and, with ``scale_by_std``, scale) each
            kept row's reward instead of its kept group's own mean and std; None: the kept group's
            own statistics (the trainer's usual GRPO advantage).
        scale_by_std: divide by the baseline's std (only with ``baselines``).
        groups: ``[K]`` a group label per kept row when one prompt can train as several groups in a step
            (DAPO and GRESO may draw a prompt again after the data's epoch ends, as their public code
            does, each draw its own group); None: the rows of one prompt are one group.
    """

    rows: np.ndarray
    baselines: dict[Any, tuple[float, float]] | None = None
    scale_by_std: bool = False
    groups: np.ndarray | None = None

    def group_keys(self, group_ids: list) -> list:
        """The advantage group of every kept row: its prompt id, or (prompt id, group label)."""
        ids = [group_ids[g] for g in self.rows.tolist()]
        return ids if self.groups is None else list(zip(ids, self.groups.tolist()))


@dataclass(frozen=True)
class StepResult:
    """One step as :func:`run_step` ran it.

    Attributes:
        group_ids: prompt id of every generated row, in generation order.
        rewards: ``[N]`` their rewards.
        kept: rows that train, and their baselines.
        rounds: generation calls made.
        plan: the first request (prompt id -> count), for the budget metrics.
        prompts: distinct prompts rolled out (the data the step consumed).
    """

    group_ids: list
    rewards: np.ndarray
    kept: Kept
    rounds: int
    plan: Request
    prompts: int

    def metrics(self) -> dict[str, float]:
        """Fair accounting: what the step generated against what it trained on."""
        return {
            M.ROLLOUT_COUNT: float(len(self.group_ids)),
            M.ROLLOUT_TRAINED: float(self.kept.rows.size),
            M.ROLLOUT_ROUNDS: float(self.rounds),
            M.ROLLOUT_PROMPTS: float(self.prompts),
        }


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


class RolloutPolicy:
    """Base class of every policy; see the module docstring for the protocol.

    Attributes:
        single_pass: plans once and trains on every row (the plan-before-generation allocators:
            :class:`~cobarl.policies.AllocatorPolicy`, whose ``allocator`` the TRL trainer then uses to
            generate and score the step in one call, as TRL does).
        needs_stream: draws its own prompts (DAPO, GRESO): the trainer must set ``stream``.
        stream: the :class:`PromptStream` it draws from, or None.
    """

    single_pass = False
    needs_stream = False
    STATE_FORMAT = "cobarl.policy"
    STATE_VERSION = 1

    def __init__(self, config) -> None:
        self.config = config.resolved()
        self.stream: PromptStream | None = None
        self.last: StepResult | None = None

    def begin(self, prompt_ids: list, total_budget: int) -> Request:
        raise NotImplementedError

    def after_round(self, ids: list, rewards: np.ndarray) -> Request:
        raise NotImplementedError

    def finish(self) -> Kept:
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """This step's metrics in the project schema (budget of the first request and fair accounting)."""
        from cobarl.allocation import budget_metrics

        if self.last is None:
            return {}
        return {**budget_metrics(np.fromiter(self.last.plan.values(), dtype=np.int64)), **self.last.metrics()}

    def _state(self) -> dict:
        return {}

    def _load_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        out = {"format": self.STATE_FORMAT, "version": self.STATE_VERSION, "config": self.config.to_dict(), **self._state()}
        if self.stream is not None:
            out["stream"] = self.stream.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        check_state_format(state, self.STATE_FORMAT, self.STATE_VERSION)
        mine, saved = self.config.to_dict(), state["config"]
        diff = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in mine.items() if saved.get(k) != v and k != "total_steps"]
        if diff:
            raise ValueError("policy state was saved with another configuration: " + "; ".join(diff))
        if self.stream is not None and "stream" not in state:  # a fresh stream would draw other prompts
            raise ValueError(f"{self.config.strategy_name} state has no prompt stream state: it was damaged")
        self._load_state(state)
        if self.stream is not None:
            self.stream.load_state_dict(state["stream"])


def request_rows(request: Request) -> list:
    """The rows of a request: each prompt id repeated its count, in order."""
    return [pid for pid, count in request.items() for _ in range(int(count))]


def run_step(policy: RolloutPolicy, prompt_ids: Sequence[Any], total_budget: int,
             generate: Callable[[list], np.ndarray]) -> StepResult:
    """Run one step of ``policy``: the one generation loop of every trainer (see the module docstring)."""
    request = policy.begin(as_id_list(prompt_ids), int(total_budget))
    plan, ids, rewards, rounds, prompts = dict(request), [], [], 0, set()
    while request:
        rows = request_rows(request)
        r = np.asarray(generate(rows), dtype=np.float64)
        if r.shape != (len(rows),):
            raise RuntimeError(f"generate returned {r.shape} rewards for {len(rows)} rows")
        ids.extend(rows)
        rewards.append(r)
        prompts.update(request)
        rounds += 1
        request = policy.after_round(rows, r)
    kept = policy.finish()
    result = StepResult(ids, np.concatenate(rewards) if rewards else np.zeros(0), kept, rounds, plan, len(prompts))
    policy.last = result
    return result
