"""Rollout policies: how a step spends its rollouts (the protocol is in :mod:`cobarl.policies.base`).

A strategy (``cobarl.STRATEGIES``) names its policy; :func:`make_policy` builds it. Adding a policy
is one module: its :class:`RolloutPolicy` subclass with its ``Options`` (an
:class:`cobarl.options.OptionSet` dataclass), ``@register_policy(name)`` and its strategies
(:func:`cobarl.strategies.register_strategy`), imported below; its flags, YAML keys, compare specs,
grids and verl settings follow from its options.
"""

from __future__ import annotations

from cobarl.policies.base import (
    POLICIES,
    Kept,
    ProtocolError,
    Request,
    RolloutPolicy,
    StepResult,
    check_kept,
    register_policy,
    request_rows,
    run_step,
    step_rounds,
)
from cobarl.policies.stream import PromptStream

# Registration order is the order of --help and of `cobarl compare --strategies all`.
from cobarl.policies.allocating import AllocatorPolicy  # noqa: E402  (the allocator's strategies: cobarl.allocator)
from cobarl.policies.reinforce_ada import ReinforceAdaPolicy  # noqa: E402
from cobarl.policies.dapo import DapoPolicy  # noqa: E402
from cobarl.policies.pods import PodsPolicy  # noqa: E402
from cobarl.policies.greso import GresoPolicy  # noqa: E402
from cobarl.policies.config import StrategyConfig, option_owners  # noqa: E402


def make_policy(config: StrategyConfig | str | None = None, **overrides) -> RolloutPolicy:
    """The policy of a strategy: ``make_policy("dapo", max_gen_batches=5)`` or ``make_policy(StrategyConfig(...))``."""
    if isinstance(config, StrategyConfig):
        if overrides:
            raise TypeError("pass either a StrategyConfig or a strategy and its options, not both")
    else:
        config = StrategyConfig(config if config is not None else overrides.pop("strategy", "coba"), **overrides)
    return config.policy(config)


__all__ = ["POLICIES", "AllocatorPolicy", "DapoPolicy", "GresoPolicy", "Kept", "PodsPolicy", "PromptStream", "ProtocolError",
           "ReinforceAdaPolicy", "Request", "RolloutPolicy", "StepResult", "StrategyConfig", "check_kept", "make_policy",
           "option_owners", "register_policy", "request_rows", "run_step", "step_rounds"]
