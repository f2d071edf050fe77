"""`StrategyConfig`: a strategy and the options a user set, resolved into its policy's options.

    StrategyConfig("coba", kappa=7).options        # AllocatorOptions(..., kappa=7.0, ...)
    StrategyConfig("dapo").to_dict()               # {'strategy': 'dapo', 'gen_batch_factor': 3, 'max_gen_batches': 10}
    StrategyConfig("dapo", kappa=7)                # ValueError: kappa is an option of allocator, not of 'dapo'

The options are the policy's preset by the strategy, with the user's on top; the config remembers
which ones the user set, so :meth:`replace` with another strategy takes that strategy's preset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from cobarl.options import fields_by_name, parse_option
from cobarl.policies.base import POLICIES
from cobarl.strategies import STRATEGIES, canonical_options, upgrade_saved


def option_owners() -> dict[str, list[str]]:
    """Every option name -> the policies that declare it, in registration order."""
    out: dict[str, list[str]] = {}
    for name, cls in POLICIES.items():
        for option_name in fields_by_name(cls.Options):
            out.setdefault(option_name, []).append(name)
    return out


class StrategyConfig:
    """A strategy (a name in ``STRATEGIES``, or a callable planning budgets with CoBA's statistics)
    and the options a user set (``overrides``, any old spelling accepted); see the module docstring.

    Attributes:
        strategy: the name or callable; ``name``: its name for messages and files.
        policy: the rollout policy's class; ``options``: its resolved options.
        overrides: the options set by the user, by their current names.
    """

    __slots__ = ("strategy", "overrides", "policy", "options")

    def __init__(self, strategy: str | Callable = "coba", **overrides: Any) -> None:
        if isinstance(strategy, str):
            if strategy not in STRATEGIES:
                raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)} (or a callable)")
            preset: Mapping[str, Any] = STRATEGIES[strategy].preset
            policy = POLICIES.get(STRATEGIES[strategy].policy)
        elif callable(strategy):
            preset, policy = {"method": strategy}, POLICIES.get("allocator")
        else:
            raise TypeError(f"strategy must be a name or a callable, got {strategy!r}")
        # an old name and its new one, both set: refused; None is "the strategy's own", not a value
        overrides = {k: v for k, v in canonical_options(overrides).items() if v is not None}
        own = fields_by_name(policy.Options)
        foreign = [k for k in overrides if k not in own]
        if foreign:
            owners = option_owners()
            raise ValueError("; ".join(
                f"{k} is an option of {', '.join(owners[k])}, not of {_name(strategy)!r} ({policy.name})" if k in owners
                else f"unknown option {k!r}; {_name(strategy)!r} takes: {', '.join(own)}" for k in foreign))
        values = {**preset, **overrides}
        options = policy.Options(**{k: v for k, v in values.items() if k in own})
        for name, value in (("strategy", strategy), ("overrides", MappingProxyType(overrides)), ("policy", policy),
                            ("options", options)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a StrategyConfig is immutable; use replace()")

    def __getattr__(self, name: str) -> Any:
        """An option's value (``config.kappa``); an option the policy does not have is an AttributeError."""
        if name.startswith("__") or name in StrategyConfig.__slots__:
            raise AttributeError(name)
        try:
            return getattr(self.options, name)
        except AttributeError:
            raise AttributeError(f"{self.name!r} ({self.policy.name}) has no option {name!r}") from None

    @property
    def name(self) -> str:
        return _name(self.strategy)

    def replace(self, **changes: Any) -> StrategyConfig:
        """Another strategy and/or other options; the user's options are kept (a new strategy's preset
        fills the rest)."""
        strategy = changes.pop("strategy", self.strategy)
        return StrategyConfig(strategy, **{**self.overrides, **changes})

    def with_total_steps(self, steps: int | None) -> StrategyConfig:
        """This config with the run's length filled in, where its policy reads one (linear-decay's schedule)
        and the user set none."""
        if steps is None or "total_steps" not in fields_by_name(self.policy.Options) or self.options.total_steps is not None:
            return self
        return self.replace(total_steps=steps)

    def to_dict(self, *, derived: bool = True) -> dict[str, Any]:
        """``{"strategy": name, **options that apply}``: the one serialiser, for config.yaml, checkpoints,
        trackers and summaries; ``derived=False`` leaves out what the run fills in (``total_steps``)."""
        return {"strategy": self.name, **self.options.to_dict(derived=derived)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, text: bool = False) -> StrategyConfig:
        """The config a :meth:`to_dict` (or an older run's file) recorded; ``text=True`` reads values typed
        as text (flags, specs, verl overrides). Every recorded option stays the user's (a default the file
        states is kept, so a run preset such as the embedded task's max budget cannot replace it), except
        the values the strategy's preset sets itself. A record from before options were a policy's own
        lists every policy's options: see :func:`_from_old_record`."""
        old = _OLD_BAG <= set(data)
        data = canonical_options(data)
        strategy = data.pop("strategy", data.pop("name", "coba"))
        preset = cls(strategy)
        own = fields_by_name(preset.policy.Options)
        if old:
            data = _from_old_record(data, preset)
        if text:
            data = {k: parse_option(preset.policy.Options, k, v, text=True) if k in own else v for k, v in data.items()}
        preset_sets = STRATEGIES[strategy].preset if isinstance(strategy, str) else {}
        return cls(strategy, **{k: v for k, v in data.items() if k not in preset_sets or v != preset_sets[k]})

    def __reduce__(self):  # pickle and deepcopy (dataclasses.asdict of a TrainConfig) rebuild it from what was given
        return (_rebuild, (self.strategy, dict(self.overrides)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StrategyConfig) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self.to_dict().items())))

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.overrides.items())
        return f"StrategyConfig({self.name!r}{', ' + given if given else ''})"


def _rebuild(strategy: str | Callable, overrides: dict[str, Any]) -> StrategyConfig:
    return StrategyConfig(strategy, **overrides)


def _name(strategy: str | Callable) -> str:
    return strategy if isinstance(strategy, str) else getattr(strategy, "__name__", "callable")


# Keys every record of the one options bag held, whatever its strategy: a file that has them all was
# written before a policy owned its options (config.yaml, checkpoints and summaries of cobarl <= 0.1).
_OLD_BAG = frozenset({"kappa", "round_size", "gen_batch_factor"})


def _from_old_record(data: dict[str, Any], preset: StrategyConfig) -> dict[str, Any]:
    """The options an old record set for its policy: the old bag also listed every other policy's
    options (None, or a default the old code refused to change for a policy that ignored it) and the
    allocator options of another schedule, stats or value; none of them did anything, so they go."""
    own = fields_by_name(preset.policy.Options)
    kept = {k: v for k, v in upgrade_saved({"strategy": preset.strategy, **data}, preset.policy.Options).items()
            if k in own and v is not None}
    for name, f in own.items():
        when = f.metadata.get("when")
        if when is not None and name in kept and kept.get(when[0], getattr(preset.options, when[0])) not in when[1]:
            del kept[name]
    return kept
