"""The rollout-policy protocol: one step's rollouts, decided at four points.

    select   which prompts the step rolls out: the trainer's batch, or more drawn from a
             :class:`PromptStream` (DAPO's refill)
    plan     how many rollouts each prompt gets first            -> :meth:`RolloutPolicy.begin`
    rounds   after a round's rewards: more for some prompts, or stop -> :meth:`RolloutPolicy.after_round`
    keep     which generated rows enter the loss, with which baseline per group
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

The promises of a step, checked by :func:`run_step` for every runner (TRL, the simulator, verl), so a
policy that breaks one fails alike everywhere, at the step that broke it (:class:`ProtocolError`):

1. ``total_budget`` is the number of rows the step trains: ``finish()`` keeps exactly that many,
   whatever it generated (more in rounds, or from more prompts);
2. every kept row is a row the step generated (an index below the rows generated), and none twice;
3. with baselines, every kept row's group (:meth:`Kept.group_keys`) has one, finite, its std >= 0;
   ``groups`` labels every kept row;
4. a request asks for at least one rollout per prompt it names (the first one for at least one prompt).

A policy declares its options once, as an :class:`cobarl.options.OptionSet` dataclass set on the
class (``Options``), registers itself in :data:`POLICIES` and its strategies in
:data:`cobarl.strategies.STRATEGIES`; trainers read what it needs from its class attributes
(:class:`RolloutPolicy`), never from its name.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.io import check_state_format
from cobarl.options import OptionSet
from cobarl.registry import Registry
from cobarl.stats import as_id_list
from cobarl.strategies import option_changes

Request = dict  # {prompt_id: rollouts to generate now}, in generation order


class ProtocolError(RuntimeError):
    """A policy broke a promise of the step (see the module docstring): a bug in the policy, not in the data."""


@dataclass(frozen=True)
class NoOptions(OptionSet):
    """The options of a policy that has none."""


@dataclass(frozen=True)
class Kept:
    """What a step trains on.

    Attributes:
        rows: indices into the step's generated rows, in training order.
        baselines: ``{group key: (mean, std)}`` to centre (and, with ``scale_by_std``, scale) each
            kept row's reward instead of what the trainer would compute; None: the kept group's own
            statistics (the trainer's usual GRPO advantage). Keyed like :meth:`group_keys`: by prompt
            id, or by (prompt id, label) when ``groups`` is set.
        scale_by_std: divide by ``std + 1e-6`` (only with ``baselines``).
        groups: ``[K]`` a group label per kept row when one prompt can train as several groups in a step
            (DAPO and GRESO may draw a prompt again after the data's epoch ends, as their public code
            does, each draw its own group); None: the rows of one prompt are one group.
        float32: the advantage is computed in float32 operations from float32 rewards and baselines, as
            the public trainer's torch tensors do (DAPO, GRESO: verl's GRPO); False: in float64.
    """

    rows: np.ndarray
    baselines: dict[Any, tuple[float, float]] | None = None
    scale_by_std: bool = False
    groups: np.ndarray | None = None
    float32: bool = False

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


class RolloutPolicy:
    """Base class of every policy; see the module docstring for the protocol.

    Class attributes (what a trainer or plugin reads, instead of the policy's name):
        name: its name in :data:`POLICIES` (set by :func:`register_policy`).
        Options: its options (an :class:`~cobarl.options.OptionSet` dataclass).
        single_pass: plans once and trains on every row (the plan-before-generation allocators:
            :class:`~cobarl.policies.AllocatorPolicy`, whose ``allocator`` the TRL trainer then uses to
            generate and score the step in one call, as TRL does).
        selects_prompts: draws its own prompts (DAPO, GRESO): the trainer must set ``stream``.
        own_baselines: centres (and scales) its rows by the baselines it returns, so a trainer's own
            reward scaling does not apply (Reinforce-Ada: its pool's; DAPO, GRESO: the public GRPO's).
        pool_baselines: its baselines come from more rows than train (Reinforce-Ada's pool), so a trainer's
            statistics of the kept group cannot stand in for them (verl needs cobarl's estimator); False
            with ``own_baselines``: they are each kept group's own (DAPO's, GRESO's public GRPO).
        baseline_scale: the trainer's reward scaling (TRL ``scale_rewards``) its baselines amount to:
            the TRL trainer warns when another one is set (``none``: they only centre, by default
            Reinforce-Ada's; ``group``: they divide by each group's std, DAPO's and GRESO's).
        baselines_are: what its baselines are, in words for that warning.
        decides: when it decides, in words for messages ("before generation", "between generation rounds", ...).
        per_prompt: decides each prompt's rounds, kept rows and baseline from that prompt's own rewards
            alone, with no state between steps (Reinforce-Ada, PODS), so a runner may run a step one prompt
            at a time, asynchronously (verl's agent-loop workers), and get the same decisions.
        verl_native: verl runs it with a feature of its own (DAPO: ``algorithm.filter_groups``).

    Attributes:
        config: the :class:`~cobarl.policies.StrategyConfig` it was built from; ``options``: its resolved options.
        stream: the :class:`~cobarl.policies.stream.PromptStream` it draws from, or None.
    """

    name = ""
    Options: type = NoOptions
    single_pass = False
    selects_prompts = False
    own_baselines = False
    pool_baselines = False
    baseline_scale = "none"
    baselines_are = ""
    decides = "after generation"
    per_prompt = False
    verl_native = False
    STATE_FORMAT = "cobarl.policy"
    STATE_VERSION = 1

    def __init__(self, config) -> None:
        self.config = config
        self.options = config.options
        self.stream = None  # the cobarl.policies.stream.PromptStream it draws from (selects_prompts)
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
        diff = option_changes(self.config.to_dict(), state["config"], self.Options)
        if diff:
            raise ValueError("policy state was saved with another configuration: " + "; ".join(diff))
        if self.stream is not None and "stream" not in state:  # a fresh stream would draw other prompts
            raise ValueError(f"{self.config.name} state has no prompt stream state: it was damaged")
        self._load_state(state)
        if self.stream is not None:
            self.stream.load_state_dict(state["stream"])


POLICIES: Registry[type[RolloutPolicy]] = Registry("rollout policy")


def register_policy(name: str):
    """Class decorator: register a :class:`RolloutPolicy` subclass as ``name`` (its ``name`` attribute)."""

    def decorator(cls: type[RolloutPolicy]) -> type[RolloutPolicy]:
        if not (isinstance(cls.Options, type) and issubclass(cls.Options, OptionSet)):
            raise TypeError(f"{cls.__name__}.Options must be an OptionSet dataclass")
        cls.name = name
        return POLICIES.register(name)(cls)

    return decorator


def request_rows(request: Request) -> list:
    """The rows of a request: each prompt id repeated its count, in order."""
    return [pid for pid, count in request.items() for _ in range(int(count))]


def _check_request(policy: RolloutPolicy, request: Request, first: bool) -> None:
    bad = {pid: count for pid, count in request.items() if not (isinstance(count, (int, np.integer)) and count >= 1)}
    if bad or (first and not request):
        raise ProtocolError(f"{policy.name} asked for {bad or 'no rollouts'} in a request: each prompt it names gets "
                            "at least one rollout, and a step's first request names at least one prompt")


def check_kept(policy: RolloutPolicy, kept: Kept, generated: list, total_budget: int) -> None:
    """Promises 1-3 of the module docstring, for the rows ``policy`` kept out of ``generated`` (their prompt ids)."""
    rows = np.asarray(kept.rows)
    who = f"{policy.name or type(policy).__name__} kept"
    if rows.ndim != 1 or rows.size != total_budget:
        raise ProtocolError(f"{who} {rows.size} rows; a step trains exactly total_budget = {total_budget} of them")
    if rows.size and (not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0 or rows.max() >= len(generated)):
        raise ProtocolError(f"{who} rows outside the {len(generated)} it generated: {rows[:8].tolist()}...")
    if np.unique(rows).size != rows.size:
        raise ProtocolError(f"{who} a row twice; each generated row trains at most once")
    if kept.groups is not None and np.shape(kept.groups) != rows.shape:
        raise ProtocolError(f"{who} {rows.size} rows but labelled {np.size(kept.groups)} groups")
    if kept.baselines is None:
        if kept.scale_by_std or kept.float32:
            raise ProtocolError(f"{who} rows to scale by their baseline's std (or in float32) without baselines")
        return
    for key in dict.fromkeys(kept.group_keys(generated)):
        mean, std = kept.baselines.get(key, (np.nan, np.nan))
        if not (np.isfinite(mean) and np.isfinite(std) and std >= 0):
            raise ProtocolError(f"{who} group {key!r} with baseline {kept.baselines.get(key)}: every kept group needs "
                                "a finite (mean, std >= 0), keyed by its group key (prompt id, or (prompt id, label) "
                                "with groups)")


def step_rounds(policy: RolloutPolicy, prompt_ids: Sequence[Any],
                total_budget: int) -> Generator[list, np.ndarray, StepResult]:
    """One step of ``policy`` as a generator: it yields each round's rows, is sent their rewards, and
    returns the :class:`StepResult` (``StopIteration.value``); the one generation loop of every runner
    (:func:`run_step` drives it with a function, verl's agent-loop workers with ``await``), which
    checks the protocol's promises as it goes."""
    request = policy.begin(as_id_list(prompt_ids), int(total_budget))
    _check_request(policy, request, first=True)
    plan, ids, rewards, rounds, prompts = dict(request), [], [], 0, set()
    while request:
        rows = request_rows(request)
        r = np.asarray((yield rows), dtype=np.float64)
        if r.shape != (len(rows),):
            raise RuntimeError(f"generate returned {r.shape} rewards for {len(rows)} rows")
        ids.extend(rows)
        rewards.append(r)
        prompts.update(request)
        rounds += 1
        request = policy.after_round(rows, r)
        _check_request(policy, request, first=False)
    kept = policy.finish()
    check_kept(policy, kept, ids, int(total_budget))
    result = StepResult(ids, np.concatenate(rewards) if rewards else np.zeros(0), kept, rounds, plan, len(prompts))
    policy.last = result
    return result


def run_step(policy: RolloutPolicy, prompt_ids: Sequence[Any], total_budget: int,
             generate: Callable[[list], np.ndarray]) -> StepResult:
    """Run one step of ``policy`` (:func:`step_rounds`), generating and scoring each round with ``generate``."""
    step = step_rounds(policy, prompt_ids, total_budget)
    try:
        rows = next(step)
        while True:
            rows = step.send(generate(rows))
    except StopIteration as done:
        return done.value
