"""The verl plugin's shared state: one per name and process, with what every step generated and trained.

Plain Python + numpy (no verl, torch or Ray import), like :mod:`cobarl.integrations.verl_plan`.
verl's agent-loop manager, replay buffer, checkpoint callback and advantage estimator all run in the
``TaskRunnerV1`` Ray actor, so a module-level registry (:func:`get_state`) shares one object. It holds

* for a plan-before-generation allocator: the :class:`~cobarl.Allocator`, ``uid -> (prompt id, budget)``
  of the groups in flight and the rollouts recorded since the last update (:meth:`SharedState.add`);
* for every other policy: one :class:`GroupRecord` per prompt group the step generated
  (:meth:`SharedState.record`), whatever generated it (verl's agent-loop workers in rounds, or the
  trainer-side step of a policy that draws its own prompts, whose policy object lives here too);
* the run's totals, for :meth:`SharedState.summary`.

:meth:`SharedState.flush` turns a training step's records into its metrics (the names of the TRL
trainer, :mod:`cobarl.metrics`) once per step. The state is saved next to verl checkpoints by
:func:`cobarl.io.save_state` (atomic JSON) and restored on resume.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.advantages import group_advantages
from cobarl.allocation import budget_metrics
from cobarl.allocator import Allocator
from cobarl.integrations.verl_plan import PluginSettings, RolloutPlan, plan_options, plan_rollout_n
from cobarl.io import check_state_format
from cobarl.strategies import option_changes

STATE_FORMAT = "cobarl.verl-plugin"  # cobarl_state.json next to a verl checkpoint: the shared state below
STATE_VERSION = 2
SUMMARY_FILE = "cobarl_summary.json"  # in trainer.default_local_dir: what the run spent so far
# Totals of the run, by the field names of `cobarl train`'s summary.json (cobarl.train.summary.RunSummary).
TOTALS = {"rollouts": M.ROLLOUT_COUNT, "rollouts_trained": M.ROLLOUT_TRAINED, "completion_tokens": M.ROLLOUT_TOKENS,
          "rounds": M.ROLLOUT_ROUNDS, "prompts": M.ROLLOUT_PROMPTS, "skipped": M.ROLLOUT_SKIPPED}

# Reinforce-Ada's pool baselines of the groups a training batch holds: uid -> (mean, std, scale_by_std),
# written by the replay buffer when it samples a group, read by the advantage estimator in the same
# process (uids are uuid4s, unique across names).
POOL_BASELINES: dict[str, tuple[float, float, bool]] = {}


@dataclass(frozen=True)
class GroupRecord:
    """One prompt group a step generated, as the plugin accounts for it.

    Attributes:
        uid: verl's uid of the group.
        generated: rewards of every rollout generated for it (a Reinforce-Ada pool, PODS's whole group).
        trained: rewards of its rows that enter the loss (empty: dropped, or evicted by verl).
        first: rollouts of its first request (its ``budget/*`` value; None: not in the step's plan).
        rounds: generation rounds it took.
        tokens: completion tokens generated for it.
        extra: the policy's own per-prompt counts, summed over the step (``rollout/unfinished``).
    """

    uid: str
    generated: np.ndarray
    trained: np.ndarray
    first: int | None = None
    rounds: int = 1
    tokens: int = 0
    extra: Mapping[str, float] | None = None


class SharedState:
    """See the module docstring."""

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self.allocator = Allocator(plan_options(settings.strategy))
        self.inflight: dict[str, tuple[Any, int]] = {}
        self.pending: list[tuple[str, Any, int, float, bool]] = []  # (uid, prompt id, budget, reward, trained) per rollout
        self.pending_tokens = 0
        self.groups: list[GroupRecord] = []
        self.step_extra: dict[str, Any] = {}  # a trainer-side step's own counts (rounds, prompts, skipped, plan)
        self.unplanned = 0
        self.steps = 0  # statistics updates so far (= training steps observed)
        self.totals = dict.fromkeys(TOTALS, 0.0)
        self.policy = None  # the policy object of a trainer-side step (GRESO), built by cobarl.integrations.verl_stream
        self.policy_state: dict | None = None  # its saved state, loaded once it is built
        self.trainer = None  # verl's trainer (set by the replay buffer): a trainer-side step reads its dataset
        self.restored_from: str | None = None
        self.lock = threading.RLock()
        self._last_plan: dict[str, float] = {}

    # plan-before-generation allocators ---------------------------------------------------------------
    def plan(self, uids: Sequence[str], prompt_ids: Sequence[Any], rollout_n: int) -> RolloutPlan:
        """Plan a batch (``len(uids) * rollout_n`` rollouts) and remember each uid's prompt id and budget."""
        with self.lock:
            plan = plan_rollout_n(self.allocator, prompt_ids, rollout_n)
            for uid, pid, n in zip(uids, plan.prompt_ids, plan.rollout_n.tolist()):
                self.inflight[str(uid)] = (pid, int(n))
            self._last_plan = {
                M.BUDGET_OBJECTIVE: plan.allocation.objective,
                M.PERF_ALLOCATE_S: plan.allocation.diagnostics.get("seconds", 0.0),
            }
            return plan

    def forget(self, uids: Iterable[str]) -> None:
        """Drop groups that will never be observed (evicted failures, cleared groups)."""
        with self.lock:
            for uid in uids:
                self.inflight.pop(str(uid), None)

    def add(self, uids: Sequence[str], rewards: Sequence[float], *, trained: bool = True, tokens: int = 0) -> None:
        """Record finished rollouts (``uids[j]`` = group of rollout j) for this step's update; ``trained``:
        sampled into the training batch (False: finished but dropped, e.g. a DAPO-filtered group);
        ``tokens``: their completion tokens.

        Each group is recorded once: its uid is forgotten afterwards, so a group seen again (sampled
        after being recorded as evicted, say) is counted in ``rollout/unplanned`` instead. Rollouts of
        unknown uids (validation, padding, groups planned before a restart without state) are skipped.
        """
        with self.lock:
            for uid, r in zip(uids, rewards):
                entry = self.inflight.get(str(uid))
                if entry is None:
                    self.unplanned += 1
                else:
                    self.pending.append((str(uid), entry[0], entry[1], float(r), trained))
            self.pending_tokens += int(tokens)
            self.forget(dict.fromkeys(str(u) for u in uids))

    # every other policy --------------------------------------------------------------------------
    def record(self, groups: Iterable[GroupRecord], **step_extra: Any) -> None:
        """Record generated groups for this step's metrics; ``step_extra``: a trainer-side step's own
        ``rounds``, ``prompts``, ``skipped`` and ``plan`` (its first request's counts)."""
        with self.lock:
            self.groups.extend(groups)
            for key, value in step_extra.items():
                self.step_extra[key] = self.step_extra.get(key, 0) + value if key == "skipped" else value

    # once per step ----------------------------------------------------------------------------------
    def flush(self) -> dict[str, float]:
        """One statistics update and the step's metrics from everything recorded since the last flush.

        Returns metrics named as the TRL trainer's (``budget/*``, ``capability/*`` for an allocator,
        ``rollout/count`` generated, ``rollout/trained``, ``rollout/rounds``, ``rollout/prompts``,
        ``rollout/completion_tokens``, ``rollout/effective_ratio``, ``reward/*``, ...); ``{}`` when nothing
        was recorded.
        """
        with self.lock:
            pending, self.pending = self.pending, []
            groups, self.groups = self.groups, []
            extra, self.step_extra = self.step_extra, {}
            unplanned, self.unplanned = self.unplanned, 0
            tokens, self.pending_tokens = self.pending_tokens, 0
            if not pending and not groups:
                return {M.ROLLOUT_UNPLANNED: float(unplanned)} if unplanned else {}
            out = self._observe(pending, tokens) if pending else _group_metrics(groups, extra)
            out[M.ROLLOUT_UNPLANNED] = float(unplanned)
            self.steps += 1
            for total, metric in TOTALS.items():
                self.totals[total] += out.get(metric, 0.0)
            return out

    def _observe(self, pending: list, tokens: int) -> dict[str, float]:
        """The allocator's statistics update from the step's recorded rollouts, and the step's metrics."""
        uids = [p[0] for p in pending]
        r = np.array([p[3] for p in pending], dtype=np.float64)
        out = dict(self.allocator.observe([p[1] for p in pending], r))
        budgets = dict(zip(uids, (p[2] for p in pending)))
        out.update(budget_metrics(np.fromiter(budgets.values(), dtype=np.int64)))  # budgets of the groups observed
        out.update(self._last_plan)
        trained = np.array([p[4] for p in pending], dtype=bool)
        if trained.any():  # GRPO statistics of the rows that train (groups verl evicted do not)
            out.update(group_advantages(r[trained], [u for u, t in zip(uids, trained.tolist()) if t]).metrics())
        out.update({M.ROLLOUT_COUNT: float(r.size), M.ROLLOUT_TRAINED: float(trained.sum()), M.ROLLOUT_ROUNDS: 1.0,
                    M.ROLLOUT_PROMPTS: float(len(budgets)), M.ROLLOUT_TOKENS: float(tokens),
                    M.REWARD_MEAN: float(r.mean()), M.REWARD_STD: float(r.std())})
        return out

    def summary(self) -> dict[str, Any]:
        """What the run spent so far, by the field names of `cobarl train`'s summary.json."""
        with self.lock:
            t, steps = self.totals, max(self.steps, 1)
            return {"strategy": self.settings.strategy.name, "steps": self.steps, "rollouts": int(t["rollouts"]),
                    "rollouts_trained": int(t["rollouts_trained"]), "completion_tokens": int(t["completion_tokens"]),
                    "rounds_per_step": t["rounds"] / steps, "prompts": int(t["prompts"]), "skipped": int(t["skipped"])}

    # checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self, *, global_step: int | None = None) -> dict:
        """JSON state for :func:`cobarl.io.save_state`; ``global_step``: verl's step, recorded when given."""
        with self.lock:
            policy = self.policy.state_dict() if self.policy is not None else self.policy_state
            return {
                "format": STATE_FORMAT,
                "version": STATE_VERSION,
                **({} if global_step is None else {"global_step": int(global_step)}),
                "name": self.settings.name,
                "strategy": self.settings.strategy.to_dict(),
                "steps": self.steps,
                "allocator": self.allocator.state_dict(),
                "inflight": [[uid, pid, n] for uid, (pid, n) in self.inflight.items()],
                "pending": [list(p) for p in self.pending],
                "totals": dict(self.totals),
                **({} if policy is None else {"policy": policy}),
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_format(state, STATE_FORMAT, STATE_VERSION, unnamed_key="inflight")
        saved, mine = state.get("strategy"), self.settings.strategy
        if saved is not None:  # (states of an allocator, written before the key, are checked by its own state)
            diff = option_changes(mine.to_dict(), saved, mine.policy.Options)
            diff += [f"{k}: saved {saved[k]!r}, now unset" for k in saved if k not in mine.to_dict()]
            if diff:
                raise ValueError("the cobarl state was saved with another strategy or options (" + "; ".join(diff) +
                                 "): resuming would mix two runs' decisions; resume with the saved settings or start "
                                 "fresh (trainer.resume_mode=disable)")
        with self.lock:
            self.allocator.load_state_dict(state["allocator"])
            self.steps = int(state.get("steps", 0))
            self.inflight = {str(uid): (pid, int(n)) for uid, pid, n in state.get("inflight", [])}
            # (states written before the trained flag existed hold 4 fields: those rows were sampled)
            self.pending = [(str(p[0]), p[1], int(p[2]), float(p[3]), bool(p[4]) if len(p) > 4 else True)
                            for p in state.get("pending", [])]
            self.totals = {**dict.fromkeys(TOTALS, 0.0), **state.get("totals", {})}
            self.policy_state = state.get("policy")
            if self.policy is not None and self.policy_state is not None:
                self.policy.load_state_dict(self.policy_state)


def _group_metrics(groups: list[GroupRecord], extra: Mapping[str, Any]) -> dict[str, float]:
    """A step's metrics from its generated groups, as the TRL trainer logs a rollout policy's step."""
    generated = np.concatenate([g.generated for g in groups])
    trained = [g for g in groups if g.trained.size]
    firsts = extra.get("plan") or [g.first for g in groups if g.first is not None]
    out = budget_metrics(np.asarray(firsts, dtype=np.int64)) if firsts else {}
    if trained:
        out.update(group_advantages(np.concatenate([g.trained for g in trained]),
                                    [g.uid for g in trained for _ in range(g.trained.size)], scale="none").metrics())
    out.update({
        M.ROLLOUT_COUNT: float(generated.size),
        M.ROLLOUT_TRAINED: float(sum(g.trained.size for g in groups)),
        M.ROLLOUT_ROUNDS: float(extra.get("rounds", max(g.rounds for g in groups))),
        M.ROLLOUT_PROMPTS: float(extra.get("prompts", len(groups))),
        M.ROLLOUT_TOKENS: float(sum(g.tokens for g in groups)),
        M.REWARD_MEAN: float(generated.mean()),
        M.REWARD_STD: float(generated.std()),
    })
    for g in groups:
        for key, value in (g.extra or {}).items():
            out[key] = out.get(key, 0.0) + float(value)
    if "skipped" in extra:
        out[M.ROLLOUT_SKIPPED] = float(extra["skipped"])
    return out


_REGISTRY: dict[str, SharedState] = {}
_REGISTRY_LOCK = threading.Lock()


def get_state(name: str, settings: PluginSettings | None = None) -> SharedState:
    """The shared state registered under ``name``; created from ``settings`` on first use.

    Raises ``KeyError`` (with the fix) when it does not exist and no settings are given.
    """
    with _REGISTRY_LOCK:
        state = _REGISTRY.get(name)
        if state is None:
            if settings is None:
                raise KeyError(
                    f"no cobarl allocator named {name!r} in this process: cobarl's replay buffer creates it; set "
                    "trainer.v1.sampler.custom_sampler.path=pkg://cobarl.integrations.verl and "
                    "trainer.v1.sampler.custom_sampler.name=CobaReplayBuffer (sync) or CobaReplayBufferAsync (async modes)"
                )
            state = _REGISTRY[name] = SharedState(settings)
        elif settings is not None and settings != state.settings:
            raise ValueError(f"cobarl allocator {name!r} already exists with different settings")
        return state


def reset_registry() -> None:
    """Forget every shared state and pool baseline (tests, or a second run in one process)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
        POOL_BASELINES.clear()
