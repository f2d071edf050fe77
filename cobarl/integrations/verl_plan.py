"""verl-independent half of the verl plugin: settings, where each policy runs, plans, worker balance.

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
4. :class:`~cobarl.integrations.verl_state.SharedState` accounts for every finished group once per
   training step and is saved next to verl checkpoints.

Policies other than the plan-before-generation allocators run where :func:`verl_runner` says
(:data:`RUNNERS`): DAPO as verl's own filter, Reinforce-Ada and PODS in rounds inside the agent-loop
workers (:mod:`cobarl.integrations.verl_rounds`), GRESO as a whole step in the trainer process
(:mod:`cobarl.integrations.verl_stream`).
"""

from __future__ import annotations


import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cobarl.allocation import Allocation, budget_metrics
from cobarl.allocator import Allocator, allocator_options

ROLLOUT_N_KEY = "__rollout_n__"  # read by verl.trainer.ppo.v1.agent_loop_tq.AgentLoopWorkerTQ._run_prompt
POOL_ESTIMATOR = "cobarl_pool_baseline"  # algorithm.adv_estimator of a policy with its own baselines (Reinforce-Ada)
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
    if getattr(config.options, "schedule", None) == "linear-decay" and config.options.total_steps is None:
        raise ValueError("linear-decay steps alpha down over the run's length, which verl does not hand to the plugin: "
                         "set trainer.v1.sampler.sampler_kwargs.total_steps to the run's training steps")
    return PluginSettings(
        name=str(opts.get("name", DEFAULT_NAME)),
        strategy=config,
        prompt_key=opts.get("prompt_key", "index"),
        missing_state=opts.get("missing_state", "error"),
    )


# Where the plugin runs each kind of policy, and the verl trainer modes that can run it (see docs/verl.md).
RUNNERS = {
    "plan": "planned before generation by the agent-loop manager (per-prompt __rollout_n__)",
    "verl": "verl's own feature (algorithm.filter_groups: evict groups with one reward value, refill)",
    "worker": "rounds inside each agent-loop worker, one prompt at a time, asynchronously",
    "trainer": "the whole step in the trainer process (the agent-loop manager draws the prompts, generates them in "
               "rounds and keeps groups)",
}
ALL_MODES = ("sync", "colocate_async", "separate_async")
RUNNER_MODES = {"plan": ALL_MODES, "verl": ALL_MODES, "worker": ALL_MODES, "trainer": ("sync",)}
# Why a runner cannot run in the modes it lacks (named in the start-up refusal).
RUNNER_LIMITS = {
    "trainer": "it decides per training step which prompts are generated (skips drawn per step, rounds sized by what "
               "the step kept, its controller moved once per step), while the async modes generate prompts ahead of "
               "the step that trains them",
}


def verl_runner(policy) -> str:
    """How the plugin runs a policy class (a key of :data:`RUNNERS`), read from its class attributes."""
    if policy.single_pass:
        return "plan"
    if policy.verl_native:
        return "verl"
    if policy.per_prompt:
        return "worker"
    if policy.selects_prompts:
        return "trainer"
    raise ValueError(f"the cobarl verl plugin has no way to run policy {policy.name!r}: it decides {policy.decides}, "
                     "across prompts, on prompts the trainer chose")


def check_verl_policy(config) -> None:
    """Refuse, at start-up, a policy the plugin cannot run. A policy verl runs with a feature of its own
    (``verl_native``: DAPO as ``algorithm.filter_groups``, which `cobarl.integrations.verl.check_config`
    requires) plans uniform budgets here, so its own options do not apply there."""
    runner = verl_runner(config.policy)
    if runner == "verl" and config.overrides:
        raise ValueError(
            f"the cobarl verl plugin cannot run {config.name}'s own options ({', '.join(config.overrides)}): in verl, "
            f"{config.name} is verl's own feature; set algorithm.filter_groups.* (e.g. max_inflight_gen_batches) instead")


def plan_options(config):
    """The allocator options the manager plans with: the strategy's own, or uniform budgets
    (``rollout.n`` per prompt) for every other policy (DAPO: verl's filter drops and refills groups
    after uniform generation; Reinforce-Ada, PODS: ``rollout.n`` is what each prompt trains; GRESO:
    the rollouts of each group it draws)."""
    # any rollout.n >= 2 is a uniform plan: its max budget must not bound what the strategy itself does not
    return config.options if config.policy.single_pass else allocator_options("uniform", max_budget=1 << 20)


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
