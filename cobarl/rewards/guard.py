"""The reward guard: one bad completion never crashes a run.

`GuardedReward` wraps any ``f(completion, answer) -> float``: an exception, a non-finite value or
(for functions not known to bound their own time) a call that outlives ``timeout`` scores 0.0 and
is counted and logged, instead of stopping training or evaluation.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Protocol

FLOAT32_MAX = 3.4028234663852886e38

logger = logging.getLogger("cobarl.rewards")


class RewardFn(Protocol):
    def __call__(self, completion: str, answer: str) -> float: ...


class RewardWarnings:
    """Counts failures by kind (``error``, ``timeout``, ``invalid``) and logs the 1st, 2nd, 3rd, 10th, 100th, ..."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: Counter[str] = Counter()
        self.last_detail = ""  # the latest failure, quoted when a run aborts on failing rewards
        self._lock = threading.Lock()

    def record(self, kind: str, detail: str) -> None:
        with self._lock:
            self.counts[kind] += 1
            n = self.counts[kind]
            self.last_detail = f"{kind}: {detail[:200]}"
        if n <= 3 or math.log10(n).is_integer():
            logger.warning("reward %s: %s on a completion (%s); scored 0.0 [%d %s so far]",
                           self.name, kind, detail[:200], n, kind)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class RewardTimeout(Exception):
    pass


def call_with_timeout(fn: Callable, args: tuple, timeout: float):
    """``fn(*args)`` in a daemon thread; RewardTimeout after ``timeout`` seconds.

    A thread cannot be killed: a hung call is abandoned and keeps running in the background
    (daemon, so it never blocks interpreter exit). Rewards that may hang for good should bound
    their own time, as `cobarl.rewards.math.MathVerifier` does with a killable worker process.
    """
    box: dict = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name="cobarl-reward").start()
    if not done.wait(timeout):
        raise RewardTimeout(f"no result after {timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class GuardedReward:
    """``f(completion, answer)`` that never raises: failures score 0.0 and are counted in ``warnings``.

    Args:
        fn: the reward function.
        name: used in log messages.
        timeout: seconds per call before it scores 0.0 (``None``: no watchdog). Ignored when
            ``bounded`` (the function bounds its own time).
        bounded: call ``fn`` directly, without a watchdog thread.

    >>> g = GuardedReward(lambda c, a: 1 / 0, name="bad")
    >>> g("x", "y"), g.warnings.counts["error"]
    (0.0, 1)
    """

    def __init__(self, fn: RewardFn, *, name: str | None = None, timeout: float | None = 30.0,
                 bounded: bool = False) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.timeout = None if bounded else timeout
        self.warnings = RewardWarnings(self.name)
        self.__name__ = self.name

    @property
    def failure_count(self) -> int:
        """Failed calls so far: this guard's, plus those a self-bounded function counts itself."""
        inner = getattr(self.fn, "warnings", None)
        return self.warnings.total + (inner.total if isinstance(inner, RewardWarnings) else 0)

    @property
    def last_failure(self) -> str:
        inner = getattr(self.fn, "warnings", None)
        if isinstance(inner, RewardWarnings) and inner.last_detail and not self.warnings.last_detail:
            return inner.last_detail
        return self.warnings.last_detail

    def __call__(self, completion: str, answer: str) -> float:
        try:
            if self.timeout is None:
                value = self.fn(completion, answer)
            else:
                value = call_with_timeout(self.fn, (completion, answer), self.timeout)
            if isinstance(value, (str, bytes)):  # float("1") would score a string as a number
                self.warnings.record("invalid", f"returned {type(value).__name__} {value!r:.60}, not a number")
                return 0.0
            value = float(value)
        except RewardTimeout as e:
            self.warnings.record("timeout", str(e))
            return 0.0
        except Exception as e:  # noqa: BLE001 - a user reward may raise anything
            self.warnings.record("error", f"{type(e).__name__}: {e}")
            return 0.0
        if not math.isfinite(value):
            self.warnings.record("invalid", f"returned {value!r}")
            return 0.0
        if abs(value) > FLOAT32_MAX:  # the trainer's reward tensors would hold it as inf
            self.warnings.record("invalid", f"returned {value!r}, beyond the float32 range (+-3.4e38) rewards are trained in")
            return 0.0
        return value


def check_signature(fn: Callable, name: str) -> None:
    """Refuse a reward that cannot be called as ``f(completion, answer)`` before any work starts."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and C callables without a signature: checked at call time
        return
    try:
        sig.bind("completion", "answer")
    except TypeError as e:
        raise ValueError(f"reward {name!r} cannot be called as f(completion, answer): {e} (signature {sig})") from None
