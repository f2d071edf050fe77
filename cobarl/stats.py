"""Per-prompt statistics: how often each prompt's rollouts succeed.

Stage 1 of the data flow (stats -> capability -> value -> allocate). Rollout rewards are reduced to
per-prompt (successes, attempts) by :func:`group_outcomes`, grouped by id, never by reshape.
:class:`PromptStats` keeps a sliding window over each prompt's last ``window`` appearances and turns
it into a pass-rate estimate for the next allocation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ESTIMATORS = ("empirical", "posterior")
PRIORS = ("global", "half")


def _as_id_list(ids: Sequence[Any] | np.ndarray) -> list:
    """Prompt ids as hashable, JSON-friendly Python scalars (numpy ints become ints)."""
    out = np.asarray(ids).tolist() if isinstance(ids, np.ndarray) else list(ids)
    for i, pid in enumerate(out):
        if not isinstance(pid, (int, str)) or isinstance(pid, bool):
            raise TypeError(f"prompt id at index {i} is {pid!r} ({type(pid).__name__}); use int or str ids")
    return out


def group_outcomes(
    group_ids: Sequence[Any] | np.ndarray, rewards: np.ndarray, *, success_threshold: float = 0.5
) -> tuple[list, np.ndarray, np.ndarray]:
    """Reduce per-rollout rewards to per-prompt ``(ids, successes, attempts)``.

    A rollout succeeds when ``reward > success_threshold``; 0.5 treats both {0, 1} rewards and the
    DAPO-style {-1, 1} rewards correctly. Ids come back in order of first appearance.

    Args:
        group_ids: ``[N]`` prompt id of each rollout.
        rewards: ``[N]`` scalar reward of each rollout.

    >>> group_outcomes([7, 7, 3, 7], np.array([1.0, 0.0, 1.0, 1.0]))
    ([7, 3], array([2, 1]), array([3, 1]))
    """
    ids = _as_id_list(group_ids)
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != (len(ids),):
        raise ValueError(f"rewards has shape {rewards.shape} but there are {len(ids)} group ids")
    bad = np.flatnonzero(~np.isfinite(rewards))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"reward of rollout {i} (prompt {ids[i]!r}) is {rewards[i]}; rewards must be finite")
    index: dict[Any, int] = {}
    inverse = np.fromiter((index.setdefault(pid, len(index)) for pid in ids), dtype=np.int64, count=len(ids))
    successes = np.bincount(inverse, weights=rewards > success_threshold, minlength=len(index))
    attempts = np.bincount(inverse, minlength=len(index))
    return list(index), successes.astype(np.int64), attempts.astype(np.int64)


@dataclass
class PromptStats:
    """Success counts per prompt over a sliding window of its last appearances.

    Args:
        window: number of most recent appearances (steps in which the prompt was rolled out) that
            the estimate uses. The public CoBA-RL script uses 1: the previous epoch's rollouts only.
        estimator: ``"empirical"`` gives successes / attempts (the papers' estimate);
            ``"posterior"`` gives the Beta-Binomial posterior mean with a prior centred on the
            prior pass rate and worth ``prior_strength`` pseudo-rollouts, which keeps a prompt seen
            with 2 rollouts from being called "never solved".
        prior: pass rate assumed for prompts never seen: ``"global"`` is the mean pass rate of all
            recorded rollouts (0.5 before any); ``"half"`` is 0.5 always, as the public CoBA-RL code.
        prior_strength: pseudo-rollouts of the posterior prior (only for ``estimator="posterior"``).
    """

    window: int = 1
    estimator: str = "empirical"
    prior: str = "global"
    prior_strength: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; valid: {', '.join(PRIORS)}")
        if not self.prior_strength > 0:
            raise ValueError(f"prior_strength must be > 0, got {self.prior_strength!r}")
        self._history: dict[Any, deque[tuple[int, int]]] = {}
        # Running totals over every recorded rollout, for the "global" prior.
        self._total_successes = 0
        self._total_attempts = 0

    def __len__(self) -> int:
        return len(self._history)

    @property
    def global_pass_rate(self) -> float:
        """Mean success over every rollout recorded so far (0.5 before any)."""
        return self._total_successes / self._total_attempts if self._total_attempts else 0.5

    def update(self, prompt_ids: Sequence[Any], successes: np.ndarray, attempts: np.ndarray) -> None:
        """Record one appearance per prompt: ``successes[i]`` of ``attempts[i]`` rollouts succeeded."""
        ids = _as_id_list(prompt_ids)
        successes = np.asarray(successes)
        attempts = np.asarray(attempts)
        if successes.shape != (len(ids),) or attempts.shape != (len(ids),):
            raise ValueError(
                f"got {len(ids)} prompt ids, successes of shape {successes.shape}, attempts of shape {attempts.shape}"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("prompt ids must be unique within one update; reduce rollouts with group_outcomes first")
        bad = np.flatnonzero((attempts < 1) | (successes < 0) | (successes > attempts) | (successes != np.round(successes)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"prompt {ids[i]!r}: successes={successes[i]}, attempts={attempts[i]}; need integers 0 <= successes <= attempts, attempts >= 1"
            )
        for pid, s, a in zip(ids, successes.tolist(), attempts.tolist()):
            self._history.setdefault(pid, deque(maxlen=self.window)).append((int(s), int(a)))
        self._total_successes += int(successes.sum())
        self._total_attempts += int(attempts.sum())

    def observe(self, group_ids: Sequence[Any], rewards: np.ndarray, *, success_threshold: float = 0.5) -> None:
        """Record per-rollout rewards (one step's worth), grouped by prompt id."""
        self.update(*group_outcomes(group_ids, rewards, success_threshold=success_threshold))

    def seen(self, prompt_ids: Sequence[Any]) -> np.ndarray:
        """``[M]`` bool: whether each prompt has been recorded at least once."""
        return np.fromiter((pid in self._history for pid in _as_id_list(prompt_ids)), dtype=bool)

    def counts(self, prompt_ids: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``([M], [M])`` successes and attempts within each prompt's window (0, 0 if unseen)."""
        ids = _as_id_list(prompt_ids)
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
                "window": self.window,
                "estimator": self.estimator,
                "prior": self.prior,
                "prior_strength": self.prior_strength,
            },
            "history": [[pid, [list(x) for x in hist]] for pid, hist in self._history.items()],
            "total_successes": self._total_successes,
            "total_attempts": self._total_attempts,
        }

    def load_state_dict(self, state: dict) -> None:
        cfg = state["config"]
        if cfg["window"] != self.window:
            # Loading a longer history into a shorter window would silently drop appearances.
            raise ValueError(f"state was saved with window={cfg['window']} but this PromptStats has window={self.window}")
        self.estimator, self.prior, self.prior_strength = cfg["estimator"], cfg["prior"], cfg["prior_strength"]
        self._history = {
            pid: deque((tuple(x) for x in hist), maxlen=self.window) for pid, hist in state["history"]
        }
        self._total_successes = int(state["total_successes"])
        self._total_attempts = int(state["total_attempts"])
