"""Reward functions by name.

A reward function is any ``f(completion: str, answer: str) -> float``. ``--reward`` accepts:

- a registered name: ``exact`` (the embedded task's exact match) or ``math`` (math-verify);
- ``"package.module:function"``, imported on demand;
- a callable (Python API).

`load_reward` resolves one of these and wraps it in a `GuardedReward` (:mod:`cobarl.rewards.guard`).
The built-in rewards are registered in ``cobarl/rewards/__init__.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

from cobarl.registry import Registry
from cobarl.rewards.guard import GuardedReward, RewardFn, check_signature


REWARDS: Registry[RewardFn] = Registry("reward")
"""Registered reward functions; ``REWARDS.names()`` lists them."""

_BOUNDED: set[str] = set()  # registered names whose functions bound their own run time
# Registered names whose function is built per run with the run's time limit and parallelism.
_CONFIGURABLE: dict[str, Callable[[float, int], RewardFn]] = {}


def register_reward(
    name: str,
    fn: RewardFn | None = None,
    *,
    bounded: bool = False,
    configure: Callable[[float, int], RewardFn] | None = None,
):
    """Make ``--reward name`` available: ``register_reward("mine", f)`` or ``@register_reward("mine")``.

    Args:
        name: the new name; a taken name is refused (ValueError).
        fn: ``f(completion, answer) -> float``; omit to use as a decorator.
        bounded: ``fn`` bounds its own time per call, so `GuardedReward` calls it directly rather than
            through a watchdog thread.
        configure: ``configure(timeout, workers) -> f`` builds the function a run uses with that run's
            limits (``math``: its worker processes and per-answer time limit).
    """

    def decorator(f: RewardFn) -> RewardFn:
        REWARDS.register(name)(f)
        if bounded:
            _BOUNDED.add(name)
        if configure is not None:
            _CONFIGURABLE[name] = configure
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
