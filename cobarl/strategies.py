"""Strategies: what a user picks (``cobarl train --strategy coba``), each a named preset of a rollout
policy and some of its options.

A policy's module registers the policy (``cobarl.policies.POLICIES``) and its strategies here, next
to its code: the allocator's in :mod:`cobarl.allocator`, Reinforce-Ada's in
:mod:`cobarl.policies.reinforce_ada`, and so on. :class:`cobarl.policies.StrategyConfig` turns a
strategy and the options a user set into the policy's options.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cobarl.registry import Registry


@dataclass(frozen=True)
class Strategy:
    """What one strategy name means.

    Attributes:
        policy: the rollout policy that runs it (a name in ``cobarl.policies.POLICIES``).
        summary: one line for ``--help`` and reports.
        preset: the policy's options this strategy sets (the rest keep the policy's defaults; a user's
            own value for any of them wins).
    """

    policy: str
    summary: str
    preset: Mapping[str, Any] = field(default_factory=dict)


STRATEGIES: Registry[Strategy] = Registry("strategy")


def register_strategy(name: str, policy: str, summary: str, **preset: Any) -> Strategy:
    """Register strategy ``name``: ``policy`` with ``preset`` options."""
    return STRATEGIES.register(name)(Strategy(policy, summary, MappingProxyType(preset)))


# Option names before the one naming rule (an option is named for what it sets, never for the policy
# that reads it): still read from flags, YAML, compare specs, grids, verl settings and old run files.
RENAMED_OPTIONS = MappingProxyType({
    "greso_sampling_factor": "sampling_factor",
    "greso_min_sampling_batch": "min_sampling_batch",
    "greso_max_gen_batches": "max_gen_batches",
    "greso_p_easy": "p_easy",
    "greso_p_hard": "p_hard",
    "greso_target_zero_variance": "target_zero_variance",
    "greso_min_p": "min_p",
    "greso_max_p": "max_p",
    "gvm_alpha": "weight_alpha",
    "gvm_beta": "weight_beta",
})


def canonical_option(name: str) -> str:
    """An option's current name from any spelling it had (``greso-p-easy`` -> ``p_easy``)."""
    name = str(name).replace("-", "_")
    return RENAMED_OPTIONS.get(name, name)


def canonical_options(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` by current option names. A record of the old bag lists an option under its old and its
    new name (GRESO's cap and DAPO's were two fields): None there is "unset", so a set value wins; two
    set values are refused (which one to keep would be an accident of ordering)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = canonical_option(key)
        if name in out and value is not None and out[name] is not None and out[name] != value:
            raise ValueError(f"{name} is given twice, as {out[name]!r} and {value!r} (once under its old name); keep one")
        if out.get(name) is None:
            out[name] = value
    return out


def upgrade_saved(saved: Mapping[str, Any], options_cls: type) -> dict[str, Any]:
    """A policy's options as a checkpoint or run file recorded them, in today's names. A record from
    before options were a policy's own lacks those its strategy then fixed (an allocator's schedule,
    method and value, Reinforce-Ada's variant): they are its strategy's preset, or the default (a
    callable strategy was its own method). Nothing else is filled in, so a real change stays a change."""
    import dataclasses

    out = canonical_options(saved)
    name = out.get("strategy")
    preset = STRATEGIES[name].preset if isinstance(name, str) and name in STRATEGIES else {"method": name}
    if "strategy" in out:  # an allocator's own state records its options only, all of them
        for f in dataclasses.fields(options_cls):
            if f.name not in out and (f.name in preset or f.default is not dataclasses.MISSING):
                out[f.name] = preset.get(f.name, f.default)
    return out


def option_changes(mine: Mapping[str, Any], saved: Mapping[str, Any], options_cls: type) -> list[str]:
    """``name: saved X, now Y`` for every option a saved record (any cobarl version's, :func:`upgrade_saved`)
    holds otherwise than ``mine``; the run's length (``total_steps``) is not a change of options."""
    saved = upgrade_saved(saved, options_cls)
    return [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in mine.items() if saved.get(k) != v and k != "total_steps"]
