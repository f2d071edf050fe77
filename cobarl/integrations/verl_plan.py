"""verl-independent half of the verl plugin: plans, worker balance, step accounting, checkpoint files.

Everything here is plain Python + numpy (no verl, torch or Ray import), so it is tested on any
machine; :mod:`cobarl.integrations.verl` wraps it in verl 0.9 classes. Per generation batch (a
training batch, a DAPO refill, an async top-up or prompts re-issued on resume, of any size k):

1. :func:`prompt_ids_from_batch` turns the dataset's ``index`` column (``extra_info.index``) into
   stable prompt ids (or hashes the prompt text when the column is missing or constant);
2. :func:`plan_rollout_n` splits exactly ``k * rollout.n`` rollouts over the k rows with the shared
   :class:`~cobarl.Allocator` into the ``__rollout_n__`` column, every row in
   ``[min_budget, max_budget]`` (feasible for every k once :func:`check_rollout_n` passed);
3. :func:`balance_workers` assigns the rows to agent-loop workers so their rollout totals differ by
   at most one prompt's budget;
4. :class:`SharedState` remembers ``uid -> (prompt id, n)``; the replay buffer :meth:`~SharedState.add`\\ s
   every finished group it sees and :meth:`~SharedState.flush`\\ es once per training step (one
   statistics and capability update per step, whatever the number of ``sample()`` calls). The state is
   saved next to verl checkpoints by :func:`cobarl.io.save_state` / :func:`cobarl.io.load_state` (atomic JSON).
"""

from __future__ import annotations


import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.advantages import group_advantages
from cobarl.allocation import Allocation, budget_metrics
from cobarl.allocator import Allocator, allocator_options
from cobarl.io import STATE_FILE, check_state_format  # noqa: F401  (STATE_FILE: the file's name, for callers)

ROLLOUT_N_KEY = "__rollout_n__"  # read by verl.trainer.ppo.v1.agent_loop_tq.AgentLoopWorkerTQ._run_prompt
STATE_FORMAT = "cobarl.verl-plugin"  # cobarl_state.json next to a verl checkpoint: the shared state below
STATE_VERSION = 2
PROMPT_KEYS = ("index", "content")
MISSING_STATE = ("error", "fresh")
DEFAULT_NAME = "default"


# 1. settings ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PluginSettings:
    """The plugin's options, read from ``trainer.v1.sampler.sampler_kwargs`` (see :func:`parse_settings`).

    Attributes:
        name: registry key shared by the agent-loop manager, the replay buffer and the checkpoint
            callback (one allocator per name and process).
        strategy: the :class:`~cobarl.StrategyConfig` (strategy, min/max budget, kappa, ...).
        prompt_key: ``"index"`` (the dataset's ``extra_info.index``) or ``"content"`` (hash of the prompt).
        missing_state: what resuming from a verl checkpoint without ``cobarl_state.json`` does:
            ``"error"`` (default: refuse, with the fix) or ``"fresh"`` (start the statistics empty).
    """

    name: str = DEFAULT_NAME
    strategy: Any = None
    prompt_key: str = "index"
    missing_state: str = "error"


_PLUGIN_FIELDS = ("name", "prompt_key", "missing_state")


def parse_settings(options: Mapping[str, Any] | None) -> PluginSettings:
    """Settings from a flat mapping: plugin keys, ``strategy`` and its policy's options (any spelling
    ``cobarl train`` reads; an option of another policy is refused by name).

    >>> s = parse_settings({"strategy": "coba", "max_budget": 64, "name": "run1"})
    >>> s.name, s.strategy.max_budget, s.prompt_key
    ('run1', 64, 'index')
    """
    from cobarl.policies import StrategyConfig, option_owners
    from cobarl.strategies import canonical_option

    opts = dict(options or {})
    if "divisor" in opts:
        raise ValueError(
            "the cobarl option `divisor` was removed: verl 0.9 pads each training batch itself "
            "(upsample_batch_to_divisible_size), so a batch of k prompts always gets exactly k * rollout.n rollouts"
        )
    known = set(option_owners()) | {"strategy"}
    unknown = sorted(k for k in opts if canonical_option(k) not in known and k not in _PLUGIN_FIELDS)
    if unknown:
        raise ValueError(f"unknown cobarl option(s) {unknown}; valid: {', '.join(_PLUGIN_FIELDS + tuple(sorted(known)))}")
    if opts.get("prompt_key", "index") not in PROMPT_KEYS:
        raise ValueError(f"prompt_key must be one of {PROMPT_KEYS}, got {opts['prompt_key']!r}")
    if opts.get("missing_state", "error") not in MISSING_STATE:
        raise ValueError(f"missing_state must be one of {MISSING_STATE}, got {opts['missing_state']!r}")
    # Hydra hands numbers over typed, or as text when quoted: both read as cobarl train reads them.
    config = StrategyConfig.from_dict({k: v for k, v in opts.items() if k not in _PLUGIN_FIELDS}, text=True)
    check_verl_policy(config)
    return PluginSettings(
        name=str(opts.get("name", DEFAULT_NAME)),
        strategy=config,
        prompt_key=opts.get("prompt_key", "index"),
        missing_state=opts.get("missing_state", "error"),
    )


def check_verl_policy(config) -> None:
    """Refuse, at start-up, a policy the plugin cannot run: it plans budgets before generation inside
    verl's own rollout, so a policy that decides between generation rounds or after generation
    (Reinforce-Ada, PODS, GRESO) would silently train as something else. A policy verl runs with a
    feature of its own (``verl_native``: DAPO as ``algorithm.filter_groups``; `cobarl.integrations.verl.check_config`
    requires it) plans uniform budgets here, so its own options do not apply there."""
    from cobarl.policies import POLICIES
    from cobarl.strategies import STRATEGIES

    policy = config.policy
    if policy.single_pass:
        return
    if policy.verl_native:
        if config.overrides:
            raise ValueError(
                f"the cobarl verl plugin cannot run {config.name}'s own options ({', '.join(config.overrides)}): in verl, "
                f"{config.name} is verl's own feature; set algorithm.filter_groups.* (e.g. max_inflight_gen_batches) instead")
        return
    supported = ", ".join(name for name, s in STRATEGIES.items() if POLICIES[s.policy].single_pass)
    native = ", ".join(name for name, s in STRATEGIES.items() if POLICIES[s.policy].verl_native)
    raise ValueError(
        f"the cobarl verl plugin cannot run {config.name!r}: it decides {policy.decides}, and the plugin only sets "
        f"per-prompt budgets before verl generates (every verl trainer mode). Supported here: {supported}, and {native} "
        f"(verl's own); {config.name} runs in cobarl train (TRL) and the simulator.")


def plan_options(config):
    """The allocator options the plugin plans with: the strategy's own, or uniform budgets for a policy
    verl runs itself (DAPO: verl's filter drops and refills groups after uniform generation)."""
    return allocator_options("uniform") if config.policy.verl_native else config.options


# 2. the per-batch invariant ---------------------------------------------------------------------------
def check_rollout_n(rollout_n: int, options) -> None:
    """Refuse, with the fix, a ``rollout.n`` for which some batch size k could not be split.

    A batch of k prompts gets exactly ``k * rollout.n`` rollouts with every prompt in
    ``[min_budget, max_budget]``; that is feasible for every k >= 1 iff
    ``min_budget <= rollout.n <= max_budget``.
    """
    n, lo, hi = int(rollout_n), options.min_budget, options.max_budget
    if lo < 2:
        raise ValueError(
            f"min_budget={lo}: a prompt planned one rollout is a GRPO group of one, which verl's grpo gives its raw "
            "reward as advantage; set trainer.v1.sampler.sampler_kwargs.min_budget to 2 or more"
        )
    if not lo <= n <= hi:
        raise ValueError(
            f"actor_rollout_ref.rollout.n={n} must lie in [min_budget, max_budget] = [{lo}, {hi}]: a batch of k prompts "
            f"gets k * rollout.n rollouts, so a single-prompt refill would get {n}; change rollout.n or the cobarl "
            "min_budget / max_budget (trainer.v1.sampler.sampler_kwargs)"
        )


# 3. prompt ids -------------------------------------------------------------------------------------------
def _scalar_id(value: Any) -> int | str:
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return str(value)


def content_id(prompt: Any) -> str:
    """Stable id of a prompt's content (chat messages or text): ``"sha1:<16 hex>"``."""
    text = json.dumps(prompt, sort_keys=True, ensure_ascii=False, default=str)
    return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def prompt_ids_from_batch(
    index_values: Sequence[Any] | None, raw_prompts: Sequence[Any] | None, mode: str = "index"
) -> tuple[list[int | str], str]:
    """Prompt ids for one batch, and the mode actually used.

    ``mode="index"`` uses the dataset index (verl's ``RLHFDataset`` copies ``extra_info.index`` into the
    ``index`` column, default 0). When that column is missing, or constant over a batch of several
    prompts (no ``extra_info.index`` in the data), the prompt content is hashed instead, so unrelated
    prompts never share statistics.

    >>> prompt_ids_from_batch([5, "a"], None)
    ([5, 'a'], 'index')
    >>> prompt_ids_from_batch([0, 0], ["x", "y"])[1]
    'content'
    """
    if mode not in PROMPT_KEYS:
        raise ValueError(f"mode must be one of {PROMPT_KEYS}, got {mode!r}")
    if mode == "index" and index_values is not None:
        ids = [_scalar_id(v) for v in index_values]
        if len(ids) < 2 or len(set(ids)) > 1:
            return ids, "index"
    if raw_prompts is None:
        raise ValueError("cannot identify prompts: the batch has neither a usable `index` column nor `raw_prompt`")
    return [content_id(p) for p in raw_prompts], "content"


# 4. the plan ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutPlan:
    """Per-row rollout counts for one generation batch.

    Attributes:
        prompt_ids: ``[k]`` prompt id of each row.
        rollout_n: ``[k]`` int64 rollouts per row, each in ``[min_budget, max_budget]``.
        total: ``rollout_n.sum()`` = ``k * rollout.n``.
        allocation: the allocator's result over the batch's distinct prompts.
    """

    prompt_ids: list
    rollout_n: np.ndarray
    total: int
    allocation: Allocation

    def metrics(self) -> dict[str, float]:
        return budget_metrics(self.rollout_n)


def plan_rollout_n(allocator: Allocator, prompt_ids: Sequence[Any], rollout_n: int) -> RolloutPlan:
    """Split exactly ``len(prompt_ids) * rollout_n`` rollouts over the rows of a batch.

    The allocator (with its last statistics) shapes the counts of the distinct prompts; a prompt that
    appears again in the same batch (a dataset with repeated prompts) gets ``rollout_n`` for each
    repeat, so the total is unchanged. Needs ``min_budget <= rollout_n <= max_budget``
    (:func:`check_rollout_n`), which makes every batch size feasible.

    >>> a = Allocator(strategy="uniform", min_budget=2, max_budget=8)
    >>> plan_rollout_n(a, [1, 2, 3], 4).rollout_n.tolist(), plan_rollout_n(a, [7], 4).total
    ([4, 4, 4], 4)
    """
    ids = list(prompt_ids)
    if not ids:
        raise ValueError("empty batch: no prompts to plan")
    check_rollout_n(rollout_n, allocator.config)
    first: dict[Any, int] = {}
    for row, pid in enumerate(ids):
        first.setdefault(pid, row)
    rows = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    allocation = allocator.plan(list(first), len(first) * int(rollout_n))
    n = np.full(len(ids), int(rollout_n), dtype=np.int64)
    n[rows] = allocation.counts
    return RolloutPlan(prompt_ids=ids, rollout_n=n, total=int(n.sum()), allocation=allocation)


# 5. agent-loop workers ----------------------------------------------------------------------------------
def balance_workers(counts: Sequence[int], num_workers: int) -> list[np.ndarray]:
    """Rows per worker such that the workers' rollout totals differ by at most ``max(counts)``.

    Longest-processing-time greedy: rows by budget, largest first (ties: lower row), each to the worker
    with the smallest total so far (ties: lower worker). The worker that ends highest received its last
    row while it was the lowest, so ``max total - min total <= that row's budget``. Each worker's rows
    are returned in batch order; workers may get no row when there are fewer rows than workers.

    >>> [p.tolist() for p in balance_workers([8, 2, 2, 2, 2, 8], 2)]
    [[0, 1, 3], [2, 4, 5]]
    """
    if num_workers < 1:
        raise ValueError(f"need at least one worker, got {num_workers}")
    c = np.asarray(counts, dtype=np.int64)
    load = np.zeros(num_workers, dtype=np.int64)
    owner = np.empty(c.size, dtype=np.int64)
    for row in np.lexsort((np.arange(c.size), -c)):
        w = int(np.argmin(load))
        owner[row] = w
        load[w] += c[row]
    return [np.flatnonzero(owner == w) for w in range(num_workers)]


def contiguous_chunks(num_rows: int, num_workers: int) -> list[np.ndarray]:
    """Rows per worker as verl's ``AgentLoopManagerTQ`` splits them (``TensorDict.chunk``: equal
    contiguous slices of ``ceil(num_rows / num_workers)`` rows, the last ones shorter or absent)."""
    size = -(-num_rows // num_workers)
    return [np.arange(s, min(s + size, num_rows)) for s in range(0, num_rows, size)]


def worker_totals(counts: Sequence[int], parts: Sequence[np.ndarray], num_workers: int) -> np.ndarray:
    """``[num_workers]`` rollouts each worker runs under ``parts`` (missing parts count 0)."""
    c = np.asarray(counts, dtype=np.int64)
    totals = np.zeros(num_workers, dtype=np.int64)
    for w, rows in enumerate(parts):
        totals[w] = c[np.asarray(rows, dtype=np.int64)].sum()
    return totals


# 6. finished groups -> statistics ---------------------------------------------------------------------
def split_trajectory_key(key: str) -> tuple[str, str, int]:
    """``"{uid}_{session_id}_{index}"`` (verl V1 TransferQueue key) -> ``(uid, session_id, index)``."""
    parts = key.rsplit("_", 2)
    if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
        raise ValueError(f"unexpected trajectory key {key!r}; expected '{{uid}}_{{session_id}}_{{index}}'")
    return parts[0], parts[1], int(parts[2])


def session_rewards(keys: Sequence[str], rewards: Sequence[float]) -> tuple[list[str], np.ndarray]:
    """One reward per rollout (``uid``, ``session``): the reward of the session's final output, as verl's
    ``compute_advantage_for_multi_trajectories`` does. Returns ``(uid per rollout, reward per rollout)``."""
    if len(keys) != len(rewards):
        raise ValueError(f"{len(keys)} keys but {len(rewards)} rewards")
    final: dict[tuple[str, str], tuple[int, float]] = {}
    for key, r in zip(keys, rewards):
        uid, session, idx = split_trajectory_key(key)
        if (uid, session) not in final or final[(uid, session)][0] < idx:
            final[(uid, session)] = (idx, float(r))
    uids = [uid for uid, _ in final]
    return uids, np.array([r for _, r in final.values()], dtype=np.float64)


# 7. shared state (one per name and process) ----------------------------------------------------------
class SharedState:
    """The allocator, ``uid -> (prompt id, n)`` of groups in flight and the current step's finished
    rollouts, shared by the plugin classes.

    verl's agent-loop manager, replay buffer and checkpoint callback all live in the ``TaskRunnerV1``
    Ray actor, so a module-level registry (:func:`get_state`) is enough to share one object.
    """

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self.allocator = Allocator(plan_options(settings.strategy))
        self.inflight: dict[str, tuple[Any, int]] = {}
        self.pending: list[tuple[str, Any, int, float, bool]] = []  # (uid, prompt id, budget, reward, trained) per rollout
        self.unplanned = 0
        self.steps = 0  # statistics updates so far (= training steps observed)
        self.restored_from: str | None = None
        self.lock = threading.RLock()
        self._last_plan: dict[str, float] = {}

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

    def add(self, uids: Sequence[str], rewards: Sequence[float], *, trained: bool = True) -> None:
        """Record finished rollouts (``uids[j]`` = group of rollout j) for this step's update; ``trained``:
        sampled into the training batch (False: finished but dropped, e.g. a DAPO-filtered group).

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
            self.forget(dict.fromkeys(str(u) for u in uids))

    def flush(self) -> dict[str, float]:
        """One statistics and capability update from every rollout recorded since the last flush.

        Returns metrics named as the TRL trainer's (``budget/*`` over the recorded groups' budgets,
        ``capability/*``, ``rollout/effective_ratio``, ...); ``{}`` when nothing was recorded.
        """
        with self.lock:
            pending, self.pending = self.pending, []
            unplanned, self.unplanned = self.unplanned, 0
            if not pending:
                return {M.ROLLOUT_UNPLANNED: float(unplanned)} if unplanned else {}
            uids = [p[0] for p in pending]
            r = np.array([p[3] for p in pending], dtype=np.float64)
            out = dict(self.allocator.observe([p[1] for p in pending], r))
            self.steps += 1
            budgets = dict(zip(uids, (p[2] for p in pending)))
        out.update(budget_metrics(np.fromiter(budgets.values(), dtype=np.int64)))  # budgets of the groups observed
        out.update(self._last_plan)
        trained = np.array([p[4] for p in pending], dtype=bool)
        if trained.any():  # GRPO statistics of the rows that train (groups verl evicted do not)
            out.update(group_advantages(r[trained], [u for u, t in zip(uids, trained.tolist()) if t]).metrics())
        out[M.ROLLOUT_COUNT] = float(r.size)
        out[M.ROLLOUT_TRAINED] = float(trained.sum())
        out[M.ROLLOUT_UNPLANNED] = float(unplanned)
        out[M.REWARD_MEAN] = float(r.mean())
        out[M.REWARD_STD] = float(r.std())
        return out

    def state_dict(self, *, global_step: int | None = None) -> dict:
        """JSON state for :func:`cobarl.io.save_state`; ``global_step``: verl's step, recorded when given."""
        with self.lock:
            return {
                "format": STATE_FORMAT,
                "version": STATE_VERSION,
                **({} if global_step is None else {"global_step": int(global_step)}),
                "name": self.settings.name,
                "steps": self.steps,
                "allocator": self.allocator.state_dict(),
                "inflight": [[uid, pid, n] for uid, (pid, n) in self.inflight.items()],
                "pending": [list(p) for p in self.pending],
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_format(state, STATE_FORMAT, STATE_VERSION, unnamed_key="inflight")
        with self.lock:
            self.allocator.load_state_dict(state["allocator"])
            self.steps = int(state.get("steps", 0))
            self.inflight = {str(uid): (pid, int(n)) for uid, pid, n in state.get("inflight", [])}
            # (states written before the trained flag existed hold 4 fields: those rows were sampled)
            self.pending = [(str(p[0]), p[1], int(p[2]), float(p[3]), bool(p[4]) if len(p) > 4 else True)
                            for p in state.get("pending", [])]


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
    """Forget every shared state (tests, or a second run in one process)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
