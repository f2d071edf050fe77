"""``summary.json`` of ``cobarl compare``: typed records, written and read only here.

A comparison's summary is a `ComparisonSummary`: its settings, one `ArmResult` per strategy (per-metric
`MeanCI` over seeds), one `PairedGap` per arm against the baseline, and, untyped, a sweep's
``grid``, a stopped comparison's ``incomplete`` and ``--against``'s ``simulator_check``. The JSON
layout is the one `cobarl.experiments.report.report_stats.summarise_comparison` builds, plus ``format_version``.

Reading is all or nothing: a key the format needs that is missing (renamed, or written by another
version) raises `SummaryFormatError` naming it, never a silent ``n/a``. Versions:

* 0: files without ``format_version`` (written before it, e.g. ``docs/results/*``): as 1, except that
  ``baseline_final_by_seed`` may be absent (then None);
* 1: ``baseline_final_by_seed`` required;
* 2: rollouts are the ones GENERATED (``rollouts``, ``rollouts_to_target``, ``rollouts_ratio``), and
  it adds how each arm spends (`ARM_METRICS_V2`: rollouts generated and trained, rounds and prompts
  per step), accuracy at equal generated rollouts (per arm and paired against the baseline) and its
  G, ``equal_generated_rollouts``. Older files may hold these keys; they are read when present.
* 3: ``runs`` required: per reported run, its ``label``, ``seed``, whether it was ``reused`` from the
  folder's run store (`cobarl.experiments.comparison.run_store`) or run by this command, and the ``command`` that
  first produced it, ``finished_at``.

Any version may hold ``accuracy_shown`` (a bool, written for simulated comparisons since
`cobarl.experiments.simulation.sim_trust`): whether report.md showed the simulated accuracy; absent (every
comparison before it, and the real back-end): shown.

A summary is written as the highest version whose keys it holds (`ComparisonSummary.layout_version`),
so an older file written back stays what it was.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 3
"""Version of the layout written now (see the module docstring for 0 and 1)."""

ARM_METRICS = (
    "initial_heldout_accuracy", "final_heldout_accuracy", "final_heldout_greedy_accuracy", "final_train_solved",
    "final_train_accuracy", "effective_ratio", "effective_ratio_last_third", "rollouts", "rollouts_to_target",
)
ARM_METRICS_V2 = ("heldout_accuracy_at_equal_generated", "rollouts_generated_per_step", "rollouts_trained_per_step",
                  "rounds_per_step", "prompts_consumed_per_step", "completion_tokens_per_step", "steps")
GAP_METRICS = (
    "final_heldout_accuracy", "final_heldout_greedy_accuracy", "final_train_solved", "effective_ratio",
    "effective_ratio_relative_percent", "rollouts_ratio",
)
GAP_METRICS_V2 = ("heldout_accuracy_at_equal_generated",)
_HEADER = ("command", "backend", "seeds", "steps", "prompts_per_step", "rollouts_per_prompt", "budget_multiplier",
           "budget_per_step", "simulator", "accuracy_metric", "baseline", "target_accuracy")
_HEADER_V2 = ("equal_generated_rollouts", "budget")
_RUN_FIELDS = ("label", "seed", "reused", "command", "finished_at")
_ARM_FIELDS = ("description", "allocator", "overrides", "budget_multiplier", "allocator_config", "seeds")


class SummaryFormatError(ValueError):
    """A summary.json this version cannot read whole (a key missing or renamed, a newer version)."""


def _need(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise SummaryFormatError(f"{where} must be a JSON object, got {type(d).__name__}")
    if key not in d:
        raise SummaryFormatError(f"{where} lacks {key!r} (renamed, or written by another cobarl version?)")
    return d[key]


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _json_num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@dataclass(frozen=True)
class MeanCI:
    """Mean over seeds with its 95 % Student-t interval (NaN: undefined; ``n`` finite values)."""

    mean: float
    ci95: tuple[float, float]
    half_width: float
    n: int
    values: tuple[float, ...]
    reached: int | None = None  # rollouts_to_target only: runs that reached the target, of `runs`
    runs: int | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> MeanCI:
        lo, hi = _need(d, "ci95", where)
        return cls(_num(_need(d, "mean", where)), (_num(lo), _num(hi)), _num(_need(d, "half_width", where)),
                   int(_need(d, "n", where)), tuple(float(v) for v in _need(d, "values", where)),
                   d.get("reached"), d.get("runs"))

    def to_dict(self) -> dict[str, Any]:
        out = {"mean": _json_num(self.mean), "ci95": [_json_num(self.ci95[0]), _json_num(self.ci95[1])],
               "half_width": _json_num(self.half_width), "n": self.n, "values": list(self.values)}
        if self.reached is not None:
            out.update(reached=self.reached, runs=self.runs)
        return out


def _metrics(d: Any, names: tuple[str, ...], where: str, later: tuple[str, ...] = (), version: int = 0) -> dict[str, MeanCI]:
    """``names``, and ``later`` (the version-2 names): required from version 2, read when present before."""
    need = names + later if version >= 2 else names + tuple(k for k in later if isinstance(d, dict) and k in d)
    return {k: MeanCI.from_dict(_need(d, k, where), f"{where}[{k!r}]") for k in need}


@dataclass(frozen=True)
class ArmResult:
    """One strategy's result over its seeds, and the allocator settings it ran with."""

    description: str
    allocator: str
    overrides: dict[str, Any]
    budget_multiplier: float
    allocator_config: dict[str, Any]
    seeds: tuple[int, ...]
    metrics: dict[str, MeanCI]  # ARM_METRICS; empty for an arm with no finished run
    transitions_percent: list | None = None
    transitions_initial_counts: list | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str, version: int = FORMAT_VERSION) -> ArmResult:
        head = {k: _need(d, k, where) for k in _ARM_FIELDS}
        metrics = _metrics(d, ARM_METRICS, where, ARM_METRICS_V2, version) if head["seeds"] else {}
        return cls(**{**head, "seeds": tuple(head["seeds"])}, metrics=metrics,
                   transitions_percent=d.get("transitions_percent"),
                   transitions_initial_counts=d.get("transitions_initial_counts"))

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _ARM_FIELDS} | {"seeds": list(self.seeds)}
        out |= {k: m.to_dict() for k, m in self.metrics.items()}
        if self.transitions_percent is not None:
            out |= {"transitions_percent": self.transitions_percent,
                    "transitions_initial_counts": self.transitions_initial_counts}
        return out


@dataclass(frozen=True)
class PairedGap:
    """An arm minus the baseline, per seed both ran (`GAP_METRICS`, each a `MeanCI`)."""

    metrics: dict[str, MeanCI]

    @classmethod
    def from_dict(cls, d: Any, where: str, version: int = FORMAT_VERSION) -> PairedGap:
        return cls(_metrics(d, GAP_METRICS, where, GAP_METRICS_V2, version))

    def to_dict(self) -> dict[str, Any]:
        return {k: m.to_dict() for k, m in self.metrics.items()}


@dataclass(frozen=True)
class ComparisonSummary:
    """A comparison's summary.json (see the module docstring)."""

    settings: dict[str, Any]  # the _HEADER keys: command, backend, seeds, steps, budgets, baseline, ...
    strategies: dict[str, ArmResult]
    gaps_vs_baseline: dict[str, PairedGap]
    baseline_final_by_seed: dict[str, Any] | None = None
    grid: dict[str, Any] | None = None
    incomplete: dict[str, Any] | None = None
    simulator_check: dict[str, Any] | None = None
    runs: list[dict[str, Any]] | None = None  # version 3: where each run comes from (see the module docstring)
    accuracy_shown: bool | None = None  # simulated comparisons: whether the report shows accuracy (sim_trust)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they are

    @property
    def backend(self) -> str:
        return self.settings["backend"]

    @property
    def baseline(self) -> str:
        return self.settings["baseline"]

    @classmethod
    def from_dict(cls, d: Any, where: str = "summary.json") -> ComparisonSummary:
        version = d.get("format_version", 0) if isinstance(d, dict) else None
        if not isinstance(version, int) or not 0 <= version <= FORMAT_VERSION:
            raise SummaryFormatError(f"{where}: format_version {version!r} is not one this cobarl reads "
                                     f"(0 to {FORMAT_VERSION}); read it with the cobarl version that wrote it")
        header = _HEADER + tuple(k for k in _HEADER_V2 if version >= 2 or k in d)
        settings = {k: _need(d, k, where) for k in header}
        arms = _need(d, "strategies", where)
        strategies = {label: ArmResult.from_dict(e, f"{where}: strategies[{label!r}]", version)
                      for label, e in arms.items()}
        gaps = {label: PairedGap.from_dict(g, f"{where}: gaps_vs_baseline[{label!r}]", version)
                for label, g in _need(d, "gaps_vs_baseline", where).items()}
        by_seed = _need(d, "baseline_final_by_seed", where) if version >= 1 else d.get("baseline_final_by_seed")
        if settings["baseline"] not in strategies:
            raise SummaryFormatError(f"{where}: baseline {settings['baseline']!r} is not one of its strategies")
        runs = _runs(d, where) if version >= 3 or "runs" in d else None
        shown = d.get("accuracy_shown")
        if shown is not None and not isinstance(shown, bool):
            raise SummaryFormatError(f"{where}: 'accuracy_shown' must be true or false, got {shown!r}")
        known = {*header, "strategies", "gaps_vs_baseline", "baseline_final_by_seed", "grid", "incomplete",
                 "simulator_check", "runs", "accuracy_shown", "format_version"}
        return cls(settings, strategies, gaps, by_seed, d.get("grid"), d.get("incomplete"), d.get("simulator_check"),
                   runs, shown, version, {k: v for k, v in d.items() if k not in known})

    def layout_version(self) -> int:
        """The highest version whose required keys this summary holds (what it is written as)."""
        if self.baseline_final_by_seed is None:
            return 0
        v2 = (all(k in self.settings for k in _HEADER_V2)
              and all(set(ARM_METRICS_V2) <= set(a.metrics) for a in self.strategies.values() if a.seeds)
              and all(set(GAP_METRICS_V2) <= set(g.metrics) for g in self.gaps_vs_baseline.values()))
        return (3 if self.runs is not None else 2) if v2 else 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout, written as `layout_version`."""
        out: dict[str, Any] = {"format_version": self.layout_version(), **self.settings}
        if self.accuracy_shown is not None:
            out["accuracy_shown"] = self.accuracy_shown
        if self.baseline_final_by_seed is not None:
            out["baseline_final_by_seed"] = self.baseline_final_by_seed
        out["strategies"] = {label: a.to_dict() for label, a in self.strategies.items()}
        out["gaps_vs_baseline"] = {label: g.to_dict() for label, g in self.gaps_vs_baseline.items()}
        for key in ("grid", "incomplete", "simulator_check", "runs"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}


def _runs(d: dict[str, Any], where: str) -> list[dict[str, Any]]:
    runs = _need(d, "runs", where)
    if not isinstance(runs, list):
        raise SummaryFormatError(f"{where}: 'runs' must be a list, got {type(runs).__name__}")
    return [{k: _need(r, k, f"{where}: runs[{i}]") for k in _RUN_FIELDS} for i, r in enumerate(runs)]


def summary_text(summary: dict[str, Any] | ComparisonSummary) -> str:
    """The file's text; a dict is checked by reading it as a `ComparisonSummary` first (so what is written
    can be read back whole)."""
    if isinstance(summary, dict):
        summary = ComparisonSummary.from_dict(summary, "summary to write")
    return json.dumps(summary.to_dict(), indent=2, allow_nan=False) + "\n"


def write_summary(path: str | Path, summary: dict[str, Any] | ComparisonSummary) -> None:
    from cobarl.io import write_text

    write_text(path, summary_text(summary))


def read_summary(path: str | Path) -> ComparisonSummary:
    """A comparison's summary.json, whole, or `SummaryFormatError` / `OSError` naming the problem."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SummaryFormatError(f"{path}: not valid JSON ({err})") from None
    return ComparisonSummary.from_dict(data, str(path))
