"""Strategy specs of ``cobarl compare``: ``NAME[:key=value,...][@MULTIPLIER]``, e.g. ``coba``,
``fixed-beta-1.5-10.5``, ``coba:kappa=7`` or ``coba@0.5`` (half the rollouts of the others); the
presets they name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cobarl.experiments.comparison.key_values import key_values
from cobarl.options import fields_by_name, parse_option
from cobarl.policies import POLICIES, StrategyConfig, option_owners
from cobarl.strategies import STRATEGIES, canonical_option

# Named settings of a strategy -> (strategy, its options, description for the report).
# A plain strategy name needs no preset: its description is its `cobarl.STRATEGIES` summary.
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "fixed-beta-10.5-1.5": ("fixed-beta", {"fixed_alpha": 10.5, "fixed_beta": 1.5}, "fixed Beta(10.5, 1.5): favours easy prompts"),
    "fixed-beta-1.5-10.5": ("fixed-beta", {"fixed_alpha": 1.5, "fixed_beta": 10.5}, "fixed Beta(1.5, 10.5): favours hard prompts"),
}
# The default comparison: uniform GRPO, Knapsack-RL, CoBA-RL (Alg. 1 and public code), both fixed Betas,
# linear decay, Explore->Exploit.
DEFAULT_STRATEGIES = (
    "uniform",
    "knapsack-rl",
    "coba",
    "coba-reference",
    "fixed-beta-10.5-1.5",
    "fixed-beta-1.5-10.5",
    "linear-decay",
    "explore-to-exploit",
)


@dataclass(frozen=True)
class StrategySpec:
    """One arm of a comparison.

    Attributes:
        label: name in the report (the spec string as typed, e.g. ``coba@0.5``).
        strategy: a strategy name (``cobarl.STRATEGIES``) or a callable
            ``f(pass_rates, total_budget, min_budget, max_budget) -> counts``.
        overrides: options of the strategy's policy (:class:`cobarl.StrategyConfig`).
        budget_multiplier: this arm's rollouts relative to the others (``@0.5`` = half).
        draw_width: simulator only, for a policy without ``max_budget``: the width of the shared draw
            matrix (an allocator's is its max budget); None: 128. A mirror of a real comparison sets the
            real task's max budget, as the simulator always drew for them.
    """

    label: str
    strategy: str | Callable
    overrides: dict[str, Any] = field(default_factory=dict)
    budget_multiplier: float = 1.0
    draw_width: int | None = None

    def check_budget(self, per_prompt: float) -> None:
        """Refuse a per-prompt budget this arm cannot train: a policy that trains n per prompt needs a whole n."""
        if not StrategyConfig(self.strategy).policy.single_pass and per_prompt != int(per_prompt):
            raise ValueError(f"{self.label}: trains n = rollouts per prompt on every prompt, a whole number; got "
                             f"{per_prompt:g}; change --rollouts-per-prompt or the budget multipliers")

    def strategy_config(self, total_steps: int) -> StrategyConfig:
        """The arm's strategy and options, with the run's length where its policy reads it (linear-decay)."""
        return StrategyConfig(self.strategy, **self.overrides).with_total_steps(total_steps)

    def describe(self) -> str:
        base = self.label.split("@")[0].split(":")[0]
        if base in PRESETS:
            text = PRESETS[base][2]
        else:
            text = STRATEGIES[self.strategy].summary if isinstance(self.strategy, str) else "custom callable"
        preset = PRESETS[base][1] if base in PRESETS else {}
        changed = {k: v for k, v in self.overrides.items() if preset.get(k) != v}
        if changed:  # the preset's text names its own settings (e.g. tau = 8): say what this arm changes
            text += "; here " + ", ".join(f"{k} = {format_value(v)}" for k, v in changed.items())
        if self.budget_multiplier != 1.0:
            text += f", at {self.budget_multiplier:g}x budget"
        return text


def parse_value(key: str, text: str) -> Any:
    """A strategy option's value typed as text, read as its (first) declaring policy reads it."""
    key = canonical_option(key)
    return parse_option(POLICIES[option_owners()[key][0]].Options, key, text, text=True)


def parse_strategy(spec: str) -> StrategySpec:
    """Parse ``NAME[:key=value,...][@MULTIPLIER]``; names are presets or strategies.

    >>> parse_strategy("coba:kappa=7@0.5").overrides, parse_strategy("coba@0.5").budget_multiplier
    ({'kappa': 7.0}, 0.5)
    """
    text = spec.strip()
    body, _, mult = text.partition("@")
    name, _, opts = body.partition(":")
    fixed = name.startswith("fixed-beta-") and name not in PRESETS
    if name in PRESETS:
        strategy, overrides, _ = PRESETS[name]
        overrides = dict(overrides)
    elif fixed:  # fixed-beta-A-B for any pair
        try:
            a, b = (float(x) for x in name[len("fixed-beta-") :].split("-"))
        except ValueError:
            raise ValueError(f"bad fixed Beta spec {name!r}; write fixed-beta-ALPHA-BETA, e.g. fixed-beta-1.5-10.5") from None
        strategy, overrides = "fixed-beta", {"fixed_alpha": a, "fixed_beta": b}
    elif name in STRATEGIES:
        strategy, overrides = name, {}
    else:
        valid = sorted(set(PRESETS) | set(STRATEGIES))
        raise ValueError(f"unknown strategy {name!r} in {spec!r}; valid: {', '.join(valid)}, fixed-beta-A-B")
    for item, key, value in key_values(filter(None, opts.split(",")), option_names(), where=f" in {spec!r}"):
        try:
            overrides[key] = parse_value(key, value)
        except ValueError as err:
            raise ValueError(f"bad option {item!r} in {spec!r}: {err}") from None
    multiplier = 1.0
    if mult:
        try:
            multiplier = float(mult)
        except ValueError:
            raise ValueError(f"bad budget multiplier {mult!r} in {spec!r}; e.g. coba@0.5") from None
        if multiplier <= 0:
            raise ValueError(f"budget multiplier must be > 0 in {spec!r}")
    return StrategySpec(label=text, strategy=strategy, overrides=overrides, budget_multiplier=multiplier)


def option_names() -> list[str]:
    """Every strategy option a spec or grid may set (not those a run derives, as the schedule length)."""
    return sorted(name for name, owners in option_owners().items()
                  if not fields_by_name(POLICIES[owners[0]].Options)[name].metadata.get("derived"))


def parse_strategies(items: Sequence[str]) -> list[StrategySpec]:
    """Comma- or space-separated specs; ``all`` means every strategy (``fixed-beta`` as its two named
    presets), ``default`` the default comparison.

    A part ``key=value`` after a comma continues the spec before it, so a spec's own option list
    survives: ``coba:kappa=7,tau=adaptive,uniform`` is two specs.
    """
    names: list[str] = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if "=" in part and ":" not in part.partition("=")[0] and names and ":" in names[-1]:
                names[-1] += f",{part}"
            elif part == "all":
                names.extend([name for name in STRATEGIES if name != "fixed-beta"] + list(PRESETS))
            elif part == "default":
                names.extend(DEFAULT_STRATEGIES)
            elif part:
                names.append(part)
    specs = [parse_strategy(n) for n in names]
    labels = [s.label for s in specs]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ValueError(f"strategy listed twice: {', '.join(sorted(dup))}")
    if not specs:
        raise ValueError("no strategies given")
    return specs


def format_value(v: Any) -> str:
    """An option value as written in a spec: ``7``, ``0.5``, ``adaptive``."""
    return f"{v:g}" if isinstance(v, float) else str(v)
