"""Per-prompt statistics: how often each prompt's rollouts succeed.

Stage 1 of the data flow (stats -> capability -> value -> allocate). Rollout rewards are reduced to
per-prompt (successes, attempts) by :func:`group_outcomes`, grouped by id, never by reshape.
:class:`PromptStats` keeps a sliding window over each prompt's last ``stats_window`` appearances and turns
it into a pass-rate estimate for the next allocation.
"""

from __future__ import annotations

from collections import deque
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ESTIMATORS = ("empirical", "posterior")
PRIORS = ("global", "half")


# Difficulty buckets of the transition matrix (CoBA-RL Fig. 7), by empirical pass rate over n samples
# (the paper: avg@16): exactly 0, (0, 1/4], (1/4, 3/4), [3/4, 1), exactly 1.
BUCKETS = ("extremely-hard", "hard", "medium", "easy", "extremely-easy")


def difficulty_buckets(successes: np.ndarray, n: int) -> np.ndarray:
    """Index into `BUCKETS` of each prompt's empirical pass rate ``successes / n``.

    >>> difficulty_buckets(np.array([0, 4, 5, 12, 16]), 16).tolist()
    [0, 1, 2, 3, 4]
    """
    q = np.asarray(successes, dtype=np.float64) / n
    return np.select([q == 0, q <= 0.25, q < 0.75, q < 1], [0, 1, 2, 3], default=4)


def transition_counts(start: np.ndarray, end: np.ndarray) -> list[list[int]]:
    """``[5][5]`` counts of prompts moving from bucket ``start[i]`` to bucket ``end[i]``."""
    counts = np.zeros((len(BUCKETS), len(BUCKETS)), dtype=np.int64)
    np.add.at(counts, (np.asarray(start), np.asarray(end)), 1)
    return counts.tolist()


def as_id_list(ids: Sequence[Any] | np.ndarray) -> list:
    """Prompt ids as hashable, JSON-friendly Python scalars (numpy ints become ints)."""
    out = np.asarray(ids).tolist() if isinstance(ids, np.ndarray) else list(ids)
    for i, pid in enumerate(out):
        if not isinstance(pid, (int, str)) or isinstance(pid, bool):
            raise TypeError(f"prompt id at index {i} is {pid!r} ({type(pid).__name__}); use int or str ids")
    return out


_RULE = re.compile(r"^\s*(>=|>|==)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class SuccessRule:
    """When a rollout's scalar reward counts as a success for the statistics.

    The papers' public code differ: CoBA-RL's ``BetaAllocator`` counts ``reward == 1.0``, and
    Knapsack-RL's dataset state takes rewards in {-1, 0, 1} with 1 a success; both differ from
    ``> 0.5`` for a reward with an overlong penalty (0.9 is a failure under ``== 1``). The same rule
    feeds the per-prompt statistics and the capability tracker.

    Build one with :func:`success_rule` from ``">0.5"``, ``">=1"``, ``"==1"`` or a callable
    ``f(rewards) -> bool array``.
    """

    op: str
    value: float
    fn: Callable[[np.ndarray], np.ndarray] | None = None

    def __call__(self, rewards: np.ndarray) -> np.ndarray:
        if self.fn is not None:
            out = np.asarray(self.fn(rewards))
            if out.shape != rewards.shape:
                raise ValueError(f"success rule {self} returned shape {out.shape} for rewards of shape {rewards.shape}")
            return out.astype(bool)
        if self.op == ">":
            return rewards > self.value
        if self.op == ">=":
            return rewards >= self.value
        return rewards == self.value

    def __str__(self) -> str:
        if self.fn is not None:
            return getattr(self.fn, "__name__", "callable")
        return f"{self.op}{self.value:g}"


def success_rule(spec: str | float | Callable | SuccessRule) -> SuccessRule:
    """Parse a success rule: ``">0.5"``, ``">=1"``, ``"==1.0"``, a callable, or a :class:`SuccessRule`.

    >>> str(success_rule("==1.0")), success_rule(">0.5")(np.array([0.9, 0.2])).tolist()
    ('==1', [True, False])
    """
    if isinstance(spec, SuccessRule):
        return spec
    if callable(spec):
        return SuccessRule("callable", float("nan"), spec)
    m = _RULE.match(spec) if isinstance(spec, str) else None
    if m is None or not np.isfinite(float(m.group(2))):
        raise ValueError(
            f"success rule {spec!r} is not understood; use '>0.5' (threshold), '>=1', '==1' (exact value, "
            "the public CoBA-RL and Knapsack-RL code) or a callable f(rewards) -> bool array"
        )
    return SuccessRule(m.group(1), float(m.group(2)))


def checked_rewards(ids: list, rewards: np.ndarray) -> np.ndarray:
    """Rewards as float64, one per id, every one finite (else ValueError naming the first that is not):
    the one check of statistics and advantages alike."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != (len(ids),):
        raise ValueError(f"rewards has shape {rewards.shape} but there are {len(ids)} group ids")
    bad = np.flatnonzero(~np.isfinite(rewards))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"reward of rollout {i} (group {ids[i]!r}) is {rewards[i]}; rewards must be finite")
    return rewards


def _group_index(ids: list) -> tuple[list, np.ndarray]:
    """Unique ids in order of first appearance, and each rollout's position among them."""
    index: dict[Any, int] = {}
    inverse = np.fromiter((index.setdefault(pid, len(index)) for pid in ids), dtype=np.int64, count=len(ids))
    return list(index), inverse


def group_outcomes(
    group_ids: Sequence[Any] | np.ndarray, rewards: np.ndarray, *, success: str | Callable | SuccessRule = ">0.5"
) -> tuple[list, np.ndarray, np.ndarray]:
    """Reduce per-rollout rewards to per-prompt ``(ids, successes, attempts)``.

    A rollout succeeds when ``success`` (see :func:`success_rule`) says so; ``">0.5"`` treats both
    {0, 1} rewards and the DAPO-style {-1, 1} rewards correctly. Ids come back in order of first
    appearance.

    Args:
        group_ids: ``[N]`` prompt id of each rollout.
        rewards: ``[N]`` scalar reward of each rollout.

    >>> group_outcomes([7, 7, 3, 7], np.array([1.0, 0.0, 1.0, 1.0]))
    ([7, 3], array([2, 1]), array([3, 1]))
    """
    ids = as_id_list(group_ids)
    rewards = checked_rewards(ids, rewards)
    unique, inverse = _group_index(ids)
    successes = np.bincount(inverse, weights=success_rule(success)(rewards), minlength=len(unique))
    attempts = np.bincount(inverse, minlength=len(unique))
    return unique, successes.astype(np.int64), attempts.astype(np.int64)


def group_sequences(
    group_ids: Sequence[Any] | np.ndarray, rewards: np.ndarray, *, success: str | Callable | SuccessRule = ">0.5"
) -> tuple[list, list[np.ndarray]]:
    """Per-prompt success sequences ``(ids, [bool array per prompt])`` in rollout order.

    Knapsack-RL's estimator averages a prompt's most recent rollouts, so the order matters.
    """
    ids = as_id_list(group_ids)
    outcome = success_rule(success)(checked_rewards(ids, rewards))
    unique, inverse = _group_index(ids)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(unique)))[:-1]
    return unique, np.split(outcome[order], bounds)


class _History:
    """What both estimators share: per-prompt history and totals over every recorded rollout."""

    def _reset(self) -> None:
        self._history: dict[Any, Any] = {}
        # Running totals over every recorded rollout, for the "global" prior and the metrics.
        self._total_successes = 0
        self._total_attempts = 0

    def __len__(self) -> int:
        return len(self._history)

    @property
    def global_pass_rate(self) -> float:
        """Mean success over every rollout recorded so far (0.5 before any)."""
        return self._total_successes / self._total_attempts if self._total_attempts else 0.5


@dataclass
class PromptStats(_History):
    """Success counts per prompt over a sliding window of its last appearances.

    Args:
        stats_window: number of most recent appearances (steps in which the prompt was rolled out)
            that the estimate uses (not the capability tracker's failure-rate ``window``). The public
            CoBA-RL script uses 1: the previous epoch's rollouts only.
        estimator: ``"empirical"`` gives successes / attempts (the papers' estimate);
            ``"posterior"`` gives the Beta-Binomial posterior mean with a prior centred on the
            prior pass rate and worth ``prior_strength`` pseudo-rollouts, which keeps a prompt seen
            with 2 rollouts from being called "never solved".
        prior: pass rate assumed for prompts never seen: ``"global"`` is the mean pass rate of all
            recorded rollouts (0.5 before any); ``"half"`` is 0.5 always, as the public CoBA-RL code.
        prior_strength: pseudo-rollouts of the posterior prior (only for ``estimator="posterior"``).
    """

    stats_window: int = 1
    estimator: str = "empirical"
    prior: str = "global"
    prior_strength: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.stats_window, int) or self.stats_window < 1:
            raise ValueError(f"stats_window must be an integer >= 1, got {self.stats_window!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; valid: {', '.join(PRIORS)}")
        if not self.prior_strength > 0:
            raise ValueError(f"prior_strength must be > 0, got {self.prior_strength!r}")
        self._reset()  # pid -> deque of (successes, attempts), newest last

    def update(self, prompt_ids: Sequence[Any], successes: np.ndarray, attempts: np.ndarray) -> None:
        """Record one appearance per prompt: ``successes[i]`` of ``attempts[i]`` rollouts succeeded."""
        ids = as_id_list(prompt_ids)
        successes = np.asarray(successes)
        attempts = np.asarray(attempts)
        if successes.shape != (len(ids),) or attempts.shape != (len(ids),):
            raise ValueError(
                f"got {len(ids)} prompt ids, successes of shape {successes.shape}, attempts of shape {attempts.shape}"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("prompt ids must be unique within one update; reduce rollouts with group_outcomes first")
        whole = np.isfinite(successes) & np.isfinite(attempts) & (successes == np.round(successes)) & (attempts == np.round(attempts))
        bad = np.flatnonzero(~whole | (attempts < 1) | (successes < 0) | (successes > attempts))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"prompt {ids[i]!r}: successes={successes[i]}, attempts={attempts[i]}; need integers 0 <= successes <= attempts, attempts >= 1"
            )
        for pid, s, a in zip(ids, successes.tolist(), attempts.tolist()):
            self._history.setdefault(pid, deque(maxlen=self.stats_window)).append((int(s), int(a)))
        self._total_successes += int(successes.sum())
        self._total_attempts += int(attempts.sum())

    def observe(
        self, group_ids: Sequence[Any], rewards: np.ndarray, *, success: str | Callable | SuccessRule = ">0.5"
    ) -> tuple[list, np.ndarray, np.ndarray]:
        """Record per-rollout rewards (one step's worth), grouped by prompt id; returns this step's outcomes."""
        outcomes = group_outcomes(group_ids, rewards, success=success)
        self.update(*outcomes)
        return outcomes

    def seen(self, prompt_ids: Sequence[Any]) -> np.ndarray:
        """``[M]`` bool: whether each prompt has been recorded at least once."""
        return np.fromiter((pid in self._history for pid in as_id_list(prompt_ids)), dtype=bool)

    def counts(self, prompt_ids: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``([M], [M])`` successes and attempts within each prompt's window (0, 0 if unseen)."""
        ids = as_id_list(prompt_ids)
        s = np.zeros(len(ids), dtype=np.int64)
        a = np.zeros(len(ids), dtype=np.int64)
        for i, pid in enumerate(ids):
            hist = self._history.get(pid)
            if hist:
                s[i] = sum(x for x, _ in hist)
                a[i] = sum(y for _, y in hist)
        return s, a

    def prior_pass_rate(self) -> float:
        return self.global_pass_rate if self.prior == "global" else 0.5

    def pass_rates(self, prompt_ids: Sequence[Any]) -> np.ndarray:
        """``[M]`` pass-rate estimate for each prompt; the prior for prompts never seen."""
        s, a = self.counts(prompt_ids)
        prior = self.prior_pass_rate()
        if self.estimator == "posterior":
            k = self.prior_strength
            return (s + k * prior) / (a + k)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(a > 0, s / np.maximum(a, 1), prior)

    def state_dict(self) -> dict:
        """JSON-serialisable state; ids keep their type (a list of pairs, not a dict keyed by str)."""
        return {
            "config": {
                "stats_window": self.stats_window,
                "estimator": self.estimator,
                "prior": self.prior,
                "prior_strength": self.prior_strength,
            },
            "history": [[pid, [list(x) for x in hist]] for pid, hist in self._history.items()],
            "total_successes": self._total_successes,
            "total_attempts": self._total_attempts,
        }

    def load_state_dict(self, state: dict) -> None:
        """All or nothing: a state saved with other options is refused before anything changes."""
        cfg = dict(state["config"])
        if "window" in cfg and "stats_window" not in cfg:
            cfg["stats_window"] = cfg.pop("window")  # states written before the rename
        mine = self.state_dict()["config"]
        if cfg != mine:
            # A longer history loaded into a shorter window would silently drop appearances; another
            # estimator or prior would silently change every estimate.
            diff = ", ".join(f"{k}: saved {cfg.get(k)!r}, now {v!r}" for k, v in mine.items() if cfg.get(k) != v)
            raise ValueError(f"prompt statistics were saved with other options ({diff})")
        history = {pid: deque((tuple(x) for x in hist), maxlen=self.stats_window) for pid, hist in state["history"]}
        totals = int(state["total_successes"]), int(state["total_attempts"])
        self._history = history
        self._total_successes, self._total_attempts = totals


@dataclass
class RecentRolloutStats(_History):
    """Knapsack-RL's per-prompt estimate: the mean of a prompt's most recent rollouts.

    Follows the public Knapsack-RL dataset state (``update_sample_state`` / ``get_sample_state``
    with ``epoch_estimation`` and ``robust_epoch_estimation`` on): the estimate is the success rate
    of the prompt's last appearance if that appearance had at least ``rollouts`` rollouts, else the
    mean of its ``rollouts`` most recent rollouts across appearances. A prompt counts as seen only
    once it has ``min_rollouts`` rollouts in all; before that it is outside the optimisation.

    Args:
        rollouts: ``reward_buffer_length`` of the public code (16).
        min_rollouts: ``min_buffer_length`` of the public code (8).
    """

    rollouts: int = 16
    min_rollouts: int = 8

    def __post_init__(self) -> None:
        for name in ("rollouts", "min_rollouts"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if name == "rollouts" else 0):
                raise ValueError(f"{name} must be an integer >= {1 if name == 'rollouts' else 0}, got {v!r}")
        # pid -> (appearances as tuples of 0/1, newest last, trimmed to what the estimate can read; total rollouts)
        self._reset()

    def update_sequences(self, prompt_ids: Sequence[Any], sequences: Sequence[np.ndarray]) -> None:
        """Record one appearance per prompt: the success (bool) of each of its rollouts, in order."""
        ids = as_id_list(prompt_ids)
        if len(sequences) != len(ids) or len(set(ids)) != len(ids):
            raise ValueError(f"need one success sequence per unique prompt id; got {len(ids)} ids, {len(sequences)} sequences")
        seqs = [tuple(int(x) for x in np.asarray(seq, dtype=bool)) for seq in sequences]
        if any(len(seq) == 0 for seq in seqs):
            raise ValueError("every recorded appearance needs at least one rollout")
        for pid, seq in zip(ids, seqs):
            hist, total = self._history.get(pid, (deque(), 0))
            hist.append(seq)
            # Older appearances matter only while the newer ones hold fewer than `rollouts` rollouts.
            while len(hist) > 1 and sum(map(len, list(hist)[1:])) >= self.rollouts:
                hist.popleft()
            self._history[pid] = (hist, total + len(seq))
            self._total_successes += sum(seq)
            self._total_attempts += len(seq)

    def observe(
        self, group_ids: Sequence[Any], rewards: np.ndarray, *, success: str | Callable | SuccessRule = "==1"
    ) -> tuple[list, np.ndarray, np.ndarray]:
        """Record per-rollout rewards (one step's worth); returns this step's ``(ids, successes, attempts)``."""
        ids, seqs = group_sequences(group_ids, rewards, success=success)
        self.update_sequences(ids, seqs)
        return ids, np.array([int(s.sum()) for s in seqs], dtype=np.int64), np.array([s.size for s in seqs], dtype=np.int64)

    def _estimate(self, pid: Any) -> float:
        hist, _ = self._history[pid]
        if len(hist[-1]) >= self.rollouts:
            return sum(hist[-1]) / len(hist[-1])
        recent = [x for seq in reversed(hist) for x in reversed(seq)][: self.rollouts]
        return sum(recent) / len(recent)

    def seen(self, prompt_ids: Sequence[Any]) -> np.ndarray:
        """``[M]`` bool: whether each prompt has at least ``min_rollouts`` rollouts recorded."""
        return np.fromiter(
            (self._history.get(pid, ((), 0))[1] >= self.min_rollouts for pid in as_id_list(prompt_ids)), dtype=bool
        )

    def pass_rates(self, prompt_ids: Sequence[Any]) -> np.ndarray:
        """``[M]`` estimates; 0 for prompts never recorded (the public state's default)."""
        return np.array([self._estimate(pid) if pid in self._history else 0.0 for pid in as_id_list(prompt_ids)])

    def state_dict(self) -> dict:
        return {
            "config": {"rollouts": self.rollouts, "min_rollouts": self.min_rollouts},
            "history": [[pid, [list(seq) for seq in hist], total] for pid, (hist, total) in self._history.items()],
            "total_successes": self._total_successes,
            "total_attempts": self._total_attempts,
        }

    def load_state_dict(self, state: dict) -> None:
        cfg = state["config"]
        if cfg != {"rollouts": self.rollouts, "min_rollouts": self.min_rollouts}:
            raise ValueError(
                f"state was saved with {cfg} but these stats use rollouts={self.rollouts}, min_rollouts={self.min_rollouts}"
            )
        history = {pid: (deque(tuple(int(x) for x in seq) for seq in hist), int(total)) for pid, hist, total in state["history"]}
        self._history = history
        self._total_successes = int(state["total_successes"])
        self._total_attempts = int(state["total_attempts"])
