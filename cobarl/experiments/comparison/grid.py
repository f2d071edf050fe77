"""A tuning sweep (``cobarl compare --grid "kappa=7,11,15;max_budget=32,128"``): a comparison whose
arms are the Cartesian product of options of one base strategy (`expand_grid`), plus
the base configuration itself; the report selects by validation accuracy, never by held-out accuracy."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cobarl import metrics as M
from cobarl.experiments.comparison.key_values import key_values
from cobarl.policies import StrategyConfig
from cobarl.strategies import canonical_option
from cobarl.experiments.comparison.specs import StrategySpec, format_value, option_names, parse_value

SELECTION_METRIC = M.EVAL_VALIDATION_ACCURACY
"""What a sweep selects on: accuracy on a validation split disjoint from train and held-out."""


@dataclass(frozen=True)
class Grid:
    """The arms of a tuning sweep.

    Attributes:
        options: option -> its values, in the order given (the strategy's option names).
        points: arm label -> its value of every option, for every arm; in run order.
        base: label of the base configuration (the strategy as given to ``--strategies``): a grid
            point when one equals it, else an extra arm (`on_grid` tells which).
        on_grid: labels of the arms that are grid points (all but an extra base arm).
    """

    options: dict[str, tuple[Any, ...]]
    points: dict[str, dict[str, Any]]
    base: str
    on_grid: tuple[str, ...]


def parse_grid(items: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``["kappa=7,11,15;max_budget=32,128"]`` (or one item per option) -> ``{option: values}``.

    >>> parse_grid(["kappa=7,11;max-budget=32", "tau=adaptive,8"])
    {'kappa': (7.0, 11.0), 'max_budget': (32,), 'tau': ('adaptive', 8.0)}
    """
    grid: dict[str, tuple[Any, ...]] = {}
    parts = filter(None, (x.strip() for item in items for x in item.split(";")))
    for part, key, values in key_values(parts, option_names(), what="grid option", form="option=v1,v2,..."):
        texts = [v.strip() for v in values.split(",")]
        if not all(texts):
            raise ValueError(f"{key}: empty value in {part!r}; write {key}=v1,v2,...")
        parsed = []
        for text in texts:
            try:
                parsed.append(parse_value(key, text))
            except ValueError as err:
                raise ValueError(f"{key}={text}: {err}") from None
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"{key}: a value repeats in {part!r}")
        grid[key] = tuple(parsed)
    if not grid:
        raise ValueError("empty grid; write e.g. kappa=7,11,15;max_budget=32,128")
    return grid


def grid_label(base: StrategySpec, values: dict[str, Any]) -> str:
    """The arm's label, itself a valid strategy spec: ``coba:kappa=11,max_budget=32`` (``@M`` kept)."""
    name, _, rest = base.label.partition("@")
    body, _, opts = name.partition(":")
    items = [*filter(None, opts.split(",")), *(f"{k}={format_value(v)}" for k, v in values.items())]
    return f"{body}:{','.join(items)}" + (f"@{rest}" if rest else "")


def expand_grid(base: StrategySpec, grid: dict[str, tuple[Any, ...]], steps: int,
                base_config: StrategyConfig | None = None) -> tuple[list[StrategySpec], Grid]:
    """The Cartesian product of ``grid`` over ``base``, in the order given (last option fastest),
    and the base configuration itself when no grid point equals it.

    ``base_config``: the settings ``base`` actually runs with (`effective_strategy`; on the real
    back-end ``cobarl train``'s defaults, e.g. its max budget); default: the strategy's own.

    Every value is checked first on its own (the base with that one value), so a bad value is
    reported by option; then every combination (e.g. ``min_budget`` above ``max_budget``).
    """
    if not isinstance(base.strategy, str):
        raise ValueError("a grid needs a named strategy, not a callable")
    typed = base.label.partition("@")[0].partition(":")[2]  # options written in the spec (not a preset's)
    both = sorted(set(grid) & {canonical_option(item.partition("=")[0].strip()) for item in typed.split(",") if item})
    if both:
        raise ValueError(f"{', '.join(both)} is set both in --strategies {base.label!r} and in the grid; set it in one place")
    for key, values in grid.items():
        for v in values:
            try:
                StrategySpec(base.label, base.strategy, {**base.overrides, key: v}).strategy_config(steps)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{key}={format_value(v)}: {err}") from None
    resolved = base_config or base.strategy_config(steps)
    base_values = {k: getattr(resolved.options, k) for k in grid}
    specs: list[StrategySpec] = []
    points: dict[str, dict[str, Any]] = {}
    base_label = None
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        label = grid_label(base, values)
        spec = StrategySpec(label, base.strategy, {**base.overrides, **values}, base.budget_multiplier)
        try:
            spec.strategy_config(steps)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{label}: {err}") from None
        specs.append(spec)
        points[label] = values
        if base_label is None and all(_same(values[k], base_values[k]) for k in grid):
            base_label = label
    on_grid = tuple(points)
    if base_label is None:  # the base configuration is not a grid point: run it as well, first
        base_label = base.label
        specs.insert(0, base)
        points = {base_label: base_values, **points}
    return specs, Grid(options=dict(grid), points=points, base=base_label, on_grid=on_grid)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return float(a) == float(b)
