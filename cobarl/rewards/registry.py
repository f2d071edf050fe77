"""Reward functions by name, plus a guard so that one bad completion never crashes a run.

A reward function is any ``f(completion: str, answer: str) -> float``. ``--reward`` accepts:

- a registered name: ``exact`` (the embedded task's exact match) or ``math`` (math-verify);
- ``"package.module:function"``, imported on demand;
- a callable (Python API).

`load_reward` resolves one of these and wraps it in a `GuardedReward`: an exception, a non-finite
value or (for functions not known to bound their own time) a call that outlives ``timeout``
scores 0.0 and is counted and logged, instead of stopping training or evaluation.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from cobarl.registry import Registry

logger = logging.getLogger("cobarl.rewards")


class RewardFn(Protocol):
    def __call__(self, completion: str, answer: str) -> float: ...


REWARDS: Registry[RewardFn] = Registry("reward")
"""Registered reward functions; ``REWARDS.names()`` lists them."""

_BOUNDED: set[str] = set()  # registered names whose functions bound their own run time


def register_reward(name: str, fn: RewardFn | None = None, *, bounded: bool = False):
    """Make ``--reward name`` available: ``register_reward("mine", f)`` or ``@register_reward("mine")``.

    Args:
        name: the new name; a taken name is refused (ValueError).
        fn: ``f(completion, answer) -> float``; omit to use as a decorator.
        bounded: ``fn`` bounds its own time per call, so `GuardedReward` calls it directly rather than
            through a watchdog thread.
    """

    def decorator(f: RewardFn) -> RewardFn:
        REWARDS.register(name)(f)
        if bounded:
            _BOUNDED.add(name)
        return f

    return decorator if fn is None else decorator(fn)


def resolve_reward(reward: str | RewardFn) -> RewardFn:
    """A registered name, ``"package.module:function"``, or a callable ``f(completion, answer)`` (returned as is).

    Raises:
        ValueError: unknown name (the message lists the valid ones), or an import path that fails.
        ImportError: ``math`` without math-verify installed.
    """
    if callable(reward):
        return reward
    if reward in REWARDS:
        if reward == "math" and importlib.util.find_spec("math_verify") is None:
            raise ImportError("reward 'math' needs math-verify: pip install 'cobarl[math]' "
                              "(or pip install 'math-verify[antlr4_13_2]>=0.7')")
        return REWARDS.get(reward)
    if ":" in reward:
        module, _, attr = reward.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import reward {reward!r}: {e}") from None
        if not callable(fn):
            raise ValueError(f"reward {reward!r} is not callable")
        return fn
    raise ValueError(
        f"unknown reward {reward!r}; valid rewards: {', '.join(REWARDS.names())}, "
        "or 'package.module:function' for a callable f(completion, answer) -> float"
    )


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


def load_reward(reward: str | RewardFn, *, timeout: float | None = 30.0, workers: int = 1) -> GuardedReward:
    """`resolve_reward` + `GuardedReward`: what training and evaluation call per completion.

    ``timeout`` and ``workers`` also configure a registered reward that bounds its own time
    (``math``: its worker processes and per-answer limit).
    """
    if isinstance(reward, GuardedReward):
        return reward
    name = reward if isinstance(reward, str) else None
    if isinstance(reward, str) and reward in _CONFIGURABLE:
        resolve_reward(reward)  # the install check
        fn = _CONFIGURABLE[reward](timeout or 30.0, workers)
    else:
        fn = resolve_reward(reward)
    check_signature(fn, name or getattr(fn, "__name__", "reward"))
    bounded = isinstance(reward, str) and reward in _BOUNDED
    return GuardedReward(fn, name=name, timeout=timeout, bounded=bounded)


# --- built-in rewards ------------------------------------------------------------------------------


def _exact(completion: str, answer: str) -> float:
    from cobarl.rewards.exact import exact_match_reward

    return exact_match_reward(completion, answer)


def _math(completion: str, answer: str) -> float:
    from cobarl.rewards.math import math_reward

    return math_reward(completion, answer)


def _math_verifier(timeout: float, workers: int) -> RewardFn:
    from cobarl.rewards.math import MathVerifier

    return MathVerifier(timeout=timeout, workers=workers)


# Registered rewards built per run with the run's time limit and parallelism.
_CONFIGURABLE: dict[str, Callable[[float, int], RewardFn]] = {"math": _math_verifier}

_exact.__name__, _math.__name__ = "exact", "math"
register_reward("exact", _exact, bounded=True)
register_reward("math", _math, bounded=True)  # a killable worker process bounds each call
