"""verl-independent half of the verl plugin: plans, prompt ids, shared state, checkpoint files.

Everything here is plain Python + numpy (no verl, torch or Ray import), so it is tested on any
machine; :mod:`cobarl.integrations.verl` wraps it in verl 0.9 classes. Per training batch:

1. :func:`prompt_ids_from_batch` turns the dataset's ``index`` column (``extra_info.index``) into
   stable prompt ids (or hashes the prompt text when the column is missing or constant);
2. :func:`batch_total` fixes the batch's rollout total, ``num_prompts * rollout.n`` (``=
   train_batch_size * rollout.n`` for a full batch), rounded to the data-parallel multiple;
3. :func:`plan_rollout_n` splits it with the shared :class:`~cobarl.Allocator` into the
   ``__rollout_n__`` column (0 = prompt dropped, only when the total cannot give every prompt
   ``min_budget``);
4. :class:`SharedState` remembers ``uid -> (prompt id, n)`` so the replay buffer can turn finished
   groups into statistics (:meth:`SharedState.observe`), and is saved next to verl checkpoints by
   :func:`save_state` / :func:`load_state` (atomic JSON, ``cobarl_state.json``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from cobarl.advantages import group_advantages
from cobarl.allocation import Allocation, budget_metrics
from cobarl.allocator import Allocator, AllocatorConfig

ROLLOUT_N_KEY = "__rollout_n__"  # read by verl.trainer.ppo.v1.agent_loop_tq.AgentLoopWorkerTQ._run_prompt
STATE_FILE = "cobarl_state.json"  # same name as the TRL trainer's checkpoint file
STATE_VERSION = 1
PROMPT_KEYS = ("index", "content")
DEFAULT_NAME = "default"


# 1. settings ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PluginSettings:
    """The plugin's options, read from ``trainer.v1.sampler.sampler_kwargs`` (see :func:`parse_settings`).

    Attributes:
        name: registry key shared by the agent-loop manager, the replay buffer and the checkpoint
            callback (one allocator per name and process).
        allocator: the :class:`~cobarl.AllocatorConfig` (strategy, min/max budget, kappa, ...).
        prompt_key: ``"index"`` (the dataset's ``extra_info.index``) or ``"content"`` (hash of the prompt).
        divisor: the total of every batch is kept a multiple of this (``None``: the trainer's GPU count).
    """

    name: str = DEFAULT_NAME
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)
    prompt_key: str = "index"
    divisor: int | None = None


_ALLOCATOR_FIELDS = tuple(f.name for f in fields(AllocatorConfig))
_PLUGIN_FIELDS = ("name", "prompt_key", "divisor")


def parse_settings(options: Mapping[str, Any] | None) -> PluginSettings:
    """Settings from a flat mapping: plugin keys plus any :class:`~cobarl.AllocatorConfig` field.

    >>> s = parse_settings({"strategy": "coba", "max_budget": 64, "name": "run1"})
    >>> s.name, s.allocator.max_budget, s.prompt_key
    ('run1', 64, 'index')
    """
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(_ALLOCATOR_FIELDS) - set(_PLUGIN_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown cobarl option(s) {unknown}; valid: {', '.join(_PLUGIN_FIELDS + _ALLOCATOR_FIELDS)}"
        )
    if opts.get("prompt_key", "index") not in PROMPT_KEYS:
        raise ValueError(f"prompt_key must be one of {PROMPT_KEYS}, got {opts['prompt_key']!r}")
    divisor = opts.get("divisor")
    if divisor is not None and (not isinstance(divisor, int) or divisor < 1):
        raise ValueError(f"divisor must be a positive integer or null, got {divisor!r}")
    alloc = {k: v for k, v in opts.items() if k in _ALLOCATOR_FIELDS}
    if isinstance(alloc.get("tau"), str) and alloc["tau"] != "adaptive":
        alloc["tau"] = float(alloc["tau"])
    return PluginSettings(
        name=str(opts.get("name", DEFAULT_NAME)),
        allocator=AllocatorConfig(**alloc),
        prompt_key=opts.get("prompt_key", "index"),
        divisor=divisor,
    )


# 2. budget totals and divisibility ---------------------------------------------------------------------
def required_multiple(dp_size: int, *, ppo_mini_batch_size: int | None = None, rollout_n: int = 1) -> int:
    """The batch multiple verl's V1 trainer pads to (``PPOTrainer._get_required_batch_multiple``):
    ``lcm(dp_size, ppo_mini_batch_size * rollout.n)``. A total that is a multiple needs no padding rows."""
    m = int(dp_size)
    if ppo_mini_batch_size:
        m = math.lcm(m, int(ppo_mini_batch_size) * int(rollout_n))
    return m


def batch_total(num_prompts: int, rollout_n: int, multiple: int = 1) -> int:
    """Rollouts for a batch of ``num_prompts``: ``num_prompts * rollout_n`` (uniform GRPO's count).

    A full batch (``train_batch_size`` prompts) gives exactly ``train_batch_size * rollout.n``; check
    it with :func:`check_divisible`. A partial batch (a DAPO refill or an async top-up) whose product is
    not a multiple of ``multiple`` is rounded down to one (never below ``multiple``), so verl's
    data-parallel split needs no padding rows.

    >>> batch_total(256, 16, 8), batch_total(3, 5, 4)
    (4096, 12)
    """
    if num_prompts < 1 or rollout_n < 1 or multiple < 1:
        raise ValueError(f"need num_prompts, rollout_n, multiple >= 1; got {num_prompts}, {rollout_n}, {multiple}")
    total = int(num_prompts) * int(rollout_n)
    return max(total - total % multiple, multiple)


def check_divisible(train_batch_size: int, rollout_n: int, multiple: int) -> None:
    """Raise, with the fix, when ``train_batch_size * rollout.n`` is not a multiple of ``multiple``."""
    total = int(train_batch_size) * int(rollout_n)
    if total % multiple:
        raise ValueError(
            f"data.train_batch_size * rollout.n = {train_batch_size} * {rollout_n} = {total} is not divisible "
            f"by {multiple} (data-parallel size / PPO mini-batch multiple); choose a train_batch_size that "
            "makes it divisible, or set the cobarl option `divisor`"
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
    """Per-prompt rollout counts for one batch.

    Attributes:
        prompt_ids: ``[M]`` prompt id of each row.
        rollout_n: ``[M]`` int64 rollouts per row; 0 = dropped (not generated).
        total: ``rollout_n.sum()``.
        allocation: the allocator's result over the kept rows (``None`` if nothing was allocated).
    """

    prompt_ids: list
    rollout_n: np.ndarray
    total: int
    allocation: Allocation | None

    @property
    def kept(self) -> np.ndarray:
        """``[M]`` bool, rows that are generated."""
        return self.rollout_n > 0

    @property
    def dropped(self) -> np.ndarray:
        """Row indices of dropped prompts."""
        return np.flatnonzero(self.rollout_n == 0)

    def metrics(self) -> dict[str, float]:
        out = budget_metrics(self.rollout_n[self.kept])
        out["budget/dropped_prompts"] = float(self.dropped.size)
        return out


def plan_rollout_n(allocator: Allocator, prompt_ids: Sequence[Any], total: int) -> RolloutPlan:
    """Split ``total`` rollouts over the rows of a batch with ``allocator`` (its last statistics).

    Every kept row gets ``min_budget <= n <= max_budget`` and the counts sum to ``total``. When
    ``total < M * min_budget`` only ``total // min_budget`` rows are kept: those whose first
    ``min_budget`` rollouts are worth most under the allocator's current value function (ties: lower
    row first); the others get 0 and are dropped.

    >>> a = Allocator(strategy="uniform", min_budget=2, max_budget=8)
    >>> plan_rollout_n(a, [1, 2, 3], 12).rollout_n.tolist(), plan_rollout_n(a, [1, 2, 3], 4).rollout_n.tolist()
    ([4, 4, 4], [2, 2, 0])
    """
    ids = list(prompt_ids)
    m, total = len(ids), int(total)
    lo, hi = allocator.config.min_budget, allocator.config.max_budget
    if m == 0:
        raise ValueError("empty batch: no prompts to plan")
    if total > m * hi:
        raise ValueError(
            f"{total} rollouts cannot be spent on {m} prompts with max_budget={hi}; raise max_budget "
            f"(at least rollout.n) or lower rollout.n"
        )
    keep_count = min(m, total // lo)
    if keep_count == 0 or keep_count * hi < total:
        raise ValueError(
            f"no feasible split of {total} rollouts with min_budget={lo}, max_budget={hi} over {m} prompts"
        )
    keep = np.ones(m, dtype=bool)
    if keep_count < m:
        p = allocator.stats.pass_rates(ids)
        worth = np.asarray(allocator.value()(np.full(m, lo, dtype=np.int64), p), dtype=np.float64)
        order = np.lexsort((np.arange(m), -worth))  # highest worth first, then lower row
        keep[:] = False
        keep[order[:keep_count]] = True
    kept_ids = [pid for pid, k in zip(ids, keep) if k]
    allocation = allocator.plan(kept_ids, total)
    n = np.zeros(m, dtype=np.int64)
    n[keep] = allocation.counts
    return RolloutPlan(prompt_ids=ids, rollout_n=n, total=int(n.sum()), allocation=allocation)


# 5. finished groups -> statistics ---------------------------------------------------------------------
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


# 6. shared state (one per name and process) ----------------------------------------------------------
class SharedState:
    """The allocator plus ``uid -> (prompt id, n)`` of groups in flight, shared by the plugin classes.

    verl's agent-loop manager, replay buffer and checkpoint callback all live in the ``TaskRunnerV1``
    Ray actor, so a module-level registry (:func:`get_state`) is enough to share one object.
    """

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self.allocator = Allocator(settings.allocator)
        self.inflight: dict[str, tuple[Any, int]] = {}
        self.restored_from: str | None = None
        self.lock = threading.RLock()
        self._plan_metrics: dict[str, float] = {}

    def plan(self, uids: Sequence[str], prompt_ids: Sequence[Any], total: int) -> RolloutPlan:
        """Plan a batch and remember each kept uid's prompt id and budget."""
        with self.lock:
            plan = plan_rollout_n(self.allocator, prompt_ids, total)
            for uid, pid, n in zip(uids, plan.prompt_ids, plan.rollout_n.tolist()):
                if n > 0:
                    self.inflight[str(uid)] = (pid, int(n))
            self._plan_metrics = plan.metrics()
            if plan.allocation is not None:
                self._plan_metrics["budget/objective"] = plan.allocation.objective
                self._plan_metrics["perf/allocate_s"] = plan.allocation.diagnostics.get("seconds", 0.0)
            return plan

    def forget(self, uids: Iterable[str]) -> None:
        """Drop groups that will never be observed (evicted by the replay buffer)."""
        with self.lock:
            for uid in uids:
                self.inflight.pop(str(uid), None)

    def observe(self, uids: Sequence[str], rewards: np.ndarray) -> dict[str, float]:
        """Update statistics and capability from finished rollouts (``uids[j]`` = group of rollout j).

        Rollouts of unknown uids (validation, padding, groups planned before a restart) are skipped and
        counted in ``rollout/unplanned``. Returns metrics named as the TRL trainer's.
        """
        rewards = np.asarray(rewards, dtype=np.float64)
        with self.lock:
            known = np.array([str(u) in self.inflight for u in uids], dtype=bool)
            out: dict[str, float] = {"rollout/unplanned": float((~known).sum())}
            if not known.any():
                return out
            uids_k = [str(u) for u, k in zip(uids, known) if k]
            r = rewards[known]
            pids = [self.inflight[u][0] for u in uids_k]
            budgets = [self.inflight[u][1] for u in dict.fromkeys(uids_k)]
            out.update(self.allocator.observe(pids, r))
            self.forget(dict.fromkeys(uids_k))
        out.update(budget_metrics(np.asarray(budgets)))  # budgets of the groups trained on
        for key in ("budget/objective", "perf/allocate_s", "budget/dropped_prompts"):
            if key in self._plan_metrics:
                out[key] = self._plan_metrics[key]
        out.update(group_advantages(r, uids_k).metrics())
        out["rollout/count"] = float(r.size)
        out["reward/mean"] = float(r.mean())
        out["reward/std"] = float(r.std())
        return out

    def state_dict(self) -> dict:
        with self.lock:
            return {
                "version": STATE_VERSION,
                "name": self.settings.name,
                "allocator": self.allocator.state_dict(),
                "inflight": [[uid, pid, n] for uid, (pid, n) in self.inflight.items()],
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"cobarl state version {state.get('version')!r} is not {STATE_VERSION}")
        with self.lock:
            self.allocator.load_state_dict(state["allocator"])
            self.inflight = {str(uid): (pid, int(n)) for uid, pid, n in state.get("inflight", [])}


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
                    f"no cobarl allocator named {name!r} in this process; set "
                    "actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                    "cobarl.integrations.verl.CobaAgentLoopManager (it creates the allocator)"
                )
            state = _REGISTRY[name] = SharedState(settings)
        elif settings is not None and settings != state.settings:
            raise ValueError(f"cobarl allocator {name!r} already exists with different settings")
        return state


def reset_registry() -> None:
    """Forget every shared state (tests, or a second run in one process)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()


# 7. checkpoint files ----------------------------------------------------------------------------------
def save_state(checkpoint_dir: str | os.PathLike, state: Mapping[str, Any], *, global_step: int | None = None) -> Path:
    """Write ``state`` to ``<checkpoint_dir>/cobarl_state.json`` atomically (temp file, fsync, rename)."""
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    tmp = path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
    payload = dict(state)
    if global_step is not None:
        payload["global_step"] = int(global_step)
    with open(tmp, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_state(checkpoint_dir: str | os.PathLike) -> dict | None:
    """The state saved by :func:`save_state` in ``checkpoint_dir``, or ``None`` if there is none."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def resume_dir(trainer_cfg: Mapping[str, Any]) -> str | None:
    """The ``global_step_N`` folder verl resumes from (mirrors ``PPOTrainer._load_checkpoint``):
    ``resume_mode=disable`` -> None; ``auto`` -> the step in ``default_local_dir``'s
    ``latest_checkpointed_iteration.txt``; ``resume_path`` -> ``resume_from_path``."""
    mode = trainer_cfg.get("resume_mode", "auto")
    if mode == "disable":
        return None
    if mode == "resume_path":
        path = trainer_cfg.get("resume_from_path")
        return os.path.abspath(path) if path else None
    base = trainer_cfg.get("default_local_dir")
    if not base:
        return None
    tracker = Path(os.path.abspath(base)) / "latest_checkpointed_iteration.txt"
    if not tracker.is_file():
        return None
    step_dir = tracker.parent / f"global_step_{int(tracker.read_text().strip())}"
    return str(step_dir) if step_dir.is_dir() else None
