"""Rollout policies: how a step spends its rollouts (the protocol is in :mod:`cobarl.policies.base`).

A strategy name (``cobarl.STRATEGIES``) names its policy kind; :func:`make_policy` builds it. Adding a
policy is one module with a :class:`RolloutPolicy` subclass, its entry in :data:`POLICIES`, its
strategy record(s) in ``cobarl.allocator.STRATEGIES`` and its options in ``POLICY_OPTIONS``.
"""

from __future__ import annotations

from cobarl.allocator import AllocatorConfig
from cobarl.policies.allocating import AllocatorPolicy
from cobarl.policies.base import Kept, PromptStream, Request, RolloutPolicy, StepResult, request_rows, run_step
from cobarl.policies.dapo import DapoPolicy
from cobarl.policies.greso import GresoPolicy
from cobarl.policies.pods import PodsPolicy
from cobarl.policies.reinforce_ada import ReinforceAdaPolicy
from cobarl.registry import Registry

POLICIES: Registry[type[RolloutPolicy]] = Registry("rollout policy")
POLICIES.register("allocator")(AllocatorPolicy)
POLICIES.register("reinforce-ada")(ReinforceAdaPolicy)
POLICIES.register("dapo")(DapoPolicy)
POLICIES.register("pods")(PodsPolicy)
POLICIES.register("greso")(GresoPolicy)


def make_policy(config: AllocatorConfig | None = None, **overrides) -> RolloutPolicy:
    """The policy of a strategy config (``AllocatorConfig(strategy=...)``)."""
    config = config or AllocatorConfig(**overrides)
    return POLICIES.get(config.defaults.policy)(config)


__all__ = ["POLICIES", "AllocatorPolicy", "DapoPolicy", "GresoPolicy", "Kept", "PodsPolicy", "PromptStream", "ReinforceAdaPolicy",
           "Request", "RolloutPolicy", "StepResult", "make_policy", "request_rows", "run_step"]
