"""Options declared once: a dataclass field carries its type, help and constraints, and every front
end (``cobarl train`` flags and YAML, ``cobarl compare`` strategy specs and ``--grid``, verl's
settings) reads a value through :func:`parse_option` and checks it with :func:`check_option`.

A field's type is its annotation (``int | None``, ``float | str``, ...); its metadata holds the rest:

- ``help``: the text of its flag and of the docs;
- ``ge``, ``gt``, ``le``, ``lt`` (bounds), ``why`` (a reason shown with them), ``choices`` (for a
  string) and ``words`` (the strings a numeric field also takes, e.g. tau's ``"adaptive"``);
- ``aliases`` (more flag spellings), ``derived`` (set
  by the run, not by an option), ``nested`` (a config of its own class, checked there);
- ``when`` and ``fallback``: an option that applies only while another option has one of some values
  (``when=("stats", ("appearances",))``): ``None`` there becomes ``fallback``; set anywhere else it is
  refused, since it would do nothing (see :class:`OptionSet`).

A rollout policy's options are one :class:`OptionSet` dataclass next to the policy's code.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def option(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
           **meta: Any) -> Any:
    """A dataclass field with its help and constraints (see the module docstring for the keys)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help, **meta})


@functools.cache
def _kinds(cls: type, name: str) -> frozenset[str]:
    """``int | None`` -> ``{"int", "None"}``: the annotation resolved (postponed annotations are text)."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    out = set()
    for a in args:
        a = typing.get_origin(a) or a
        out.add("None" if a is type(None) else "Callable" if a is Callable else getattr(a, "__name__", str(a)))
    return frozenset(out)


def fields_by_name(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def describe(cls: type, name: str) -> str:
    """What a field takes, as the error messages say it: ``an integer >= 1``, ``a finite number > 0 or 'adaptive'``."""
    f, kinds = fields_by_name(cls)[name], _kinds(cls, name)
    meta = f.metadata
    if meta.get("choices"):
        text = "one of " + ", ".join(map(str, meta["choices"]))
    elif "int" in kinds:
        text = "an integer"
    elif "float" in kinds:
        text = "a finite number"
    elif "bool" in kinds:
        text = "true or false"
    else:
        text = " or ".join(sorted(kinds - {"None"}))
    bounds = [f"{op} {_number(meta[key])}" for key, op in _BOUNDS if key in meta]
    if bounds:
        text += " " + " and ".join(bounds)
    if meta.get("words"):
        text += " or " + " or ".join(repr(w) for w in meta["words"])
    if "Callable" in kinds and "str" in kinds:
        text += " (or a callable)"
    return text + (f" ({meta['why']})" if meta.get("why") else "")


def _number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,g}"


def _refuse(cls: type, name: str, value: Any) -> ValueError:
    return ValueError(f"{name} must be {describe(cls, name)}, got {value!r:.80}")


def parse_option(cls: type, name: str, value: Any, *, text: bool = False) -> Any:
    """``value`` as field ``name`` of ``cls`` holds it, or ValueError naming the field and what it takes.

    ``text=True`` for values typed as text (a flag, a strategy spec, a grid, verl's overrides): a
    string is read as the field's number or bool. Otherwise (YAML, Python) a string is accepted only
    where the field holds strings, so a quoted ``'4'`` in a config file is not silently a number.
    An int for a float field becomes a float. Bounds are checked by :func:`check_option`.
    """
    kinds = _kinds(cls, name)
    words = fields_by_name(cls)[name].metadata.get("words", ())
    if value is None:
        if "None" in kinds:
            return None
        raise _refuse(cls, name, value)
    if isinstance(value, str) and text and value not in words:
        if "bool" in kinds and value.lower() in ("true", "false"):
            return value.lower() == "true"
        for kind, convert in (("int", int), ("float", float)):
            if kind in kinds:
                try:
                    return parse_option(cls, name, convert(value))
                except ValueError:
                    pass
        if "int" in kinds or "float" in kinds:
            raise _refuse(cls, name, value)
    if isinstance(value, (bool, np.bool_)):
        if "bool" in kinds:
            return bool(value)
    elif isinstance(value, (int, np.integer)):
        if "int" in kinds:
            return int(value)
        if "float" in kinds:
            return float(value)
    elif isinstance(value, (float, np.floating)):
        if "float" in kinds and math.isfinite(value):
            return float(value)
    elif isinstance(value, str):
        if "str" in kinds and (not words or value in words or "int" not in kinds and "float" not in kinds):
            return value
    elif callable(value) and "Callable" in kinds:
        return value
    raise _refuse(cls, name, value)


def check_option(cls: type, name: str, value: Any) -> str | None:
    """Why ``value`` breaks field ``name``'s choices or bounds (None if it does not)."""
    meta = fields_by_name(cls)[name].metadata
    if value is None or isinstance(value, bool) or callable(value) or value in meta.get("words", ()):
        return None
    if meta.get("choices") and value not in meta["choices"]:
        return str(_refuse(cls, name, value))
    ok = {"ge": lambda x, b: x >= b, "gt": lambda x, b: x > b, "le": lambda x, b: x <= b, "lt": lambda x, b: x < b}
    if isinstance(value, (int, float)) and not all(ok[key](value, meta[key]) for key, _ in _BOUNDS if key in meta):
        return str(_refuse(cls, name, value))
    return None


def check_fields(obj: Any) -> list[str]:
    """Parse (typed, not text) and bound-check every field of dataclass ``obj``, storing each parsed
    value (an int in a float field becomes a float); the problems, one line each."""
    errors = []
    for f in dataclasses.fields(obj):
        if "help" not in f.metadata or f.metadata.get("nested"):
            continue  # not an option (a nested config is checked by its own class)
        try:
            value = parse_option(type(obj), f.name, getattr(obj, f.name))
        except ValueError as e:
            errors.append(str(e))
            continue
        object.__setattr__(obj, f.name, value)
        problem = check_option(type(obj), f.name, value)
        if problem:
            errors.append(problem)
    return errors


class OptionSet:
    """Base of a component's options (a dataclass that subclasses it): every field an :func:`option`.

    Construction parses and bound-checks every field (:func:`check_fields`), resolves the conditional
    ones (``when``/``fallback``) and runs :meth:`problems`, the cross-field checks a subclass adds; a
    bad value raises ValueError naming the option, before any work.
    """

    def __post_init__(self) -> None:
        errors = check_fields(self) or _resolve_conditional(self)
        errors = errors or list(self.problems())
        if errors:
            raise ValueError("; ".join(errors))

    def problems(self):
        """Cross-field problems, one line each (the fields already passed their own checks)."""
        return ()

    def applies(self, name: str) -> bool:
        """Whether option ``name`` does anything here (a conditional option outside its condition does not)."""
        when = fields_by_name(type(self))[name].metadata.get("when")
        return when is None or getattr(self, when[0]) in when[1]

    def to_dict(self, *, derived: bool = True) -> dict[str, Any]:
        """The options that apply, JSON-friendly (a callable by its name): the one serialiser, for
        config.yaml, checkpoints and summaries. ``derived=False`` leaves out what the run fills in."""
        out = {}
        for f in dataclasses.fields(self):
            if not self.applies(f.name) or (not derived and f.metadata.get("derived")):
                continue
            value = getattr(self, f.name)
            out[f.name] = getattr(value, "__name__", "callable") if callable(value) else value
        return out


def _resolve_conditional(obj: OptionSet) -> list[str]:
    """Fill each conditional option left None where it applies; refuse one set where it does not."""
    errors = []
    for f in dataclasses.fields(obj):
        when = f.metadata.get("when")
        if when is None:
            continue
        value = getattr(obj, f.name)
        if obj.applies(f.name):
            if value is None:
                object.__setattr__(obj, f.name, f.metadata["fallback"])
        elif value is not None:
            allowed = " or ".join(repr(v) for v in when[1])
            errors.append(f"{f.name} applies when {when[0]} is {allowed}, and here {when[0]} is "
                          f"{getattr(obj, when[0])!r}: it would do nothing")
    return errors
