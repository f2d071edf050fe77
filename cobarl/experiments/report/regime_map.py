"""The regime map: each policy's held-out gain over uniform GRPO along the regimes of the embedded task.

    python -m cobarl.experiments.report.regime_map docs/results/real-v4-policies docs/results/real-v4-six-arms \\
        docs/results/real-v4-policies-steps runs/map-u50 runs/map-u50-steps \\
        --diagnose families-v4=runs/diag-v4 --diagnose families-u50=d0.json,d1.json,d2.json \\
        --out runs/regime-map --install cobarl/data/regime_map.json

Inputs: real ``cobarl compare`` reports (their folders) and, per preset, ``cobarl diagnose --task PRESET
--json`` outputs, one per seed (``--diagnose PRESET=PATH,...``; a folder stands for its ``*.json``).
A report's preset is the ``--task`` of its recorded ``--train-args`` (families-v4 when absent), its
budget mode the summary's ``budget`` ("generated" in files written before the option existed).

What it measures: per (preset, budget) cell, each policy's paired gap in final held-out accuracy
against the report's uniform baseline, as `cobarl.experiments.report.report_stats` computed it (mean over
seeds and its 95 % Student-t interval): at equal generated rollouts with ``--budget generated`` (every
run ends at the same generated total), at equal steps with ``--budget steps``. Along x, the regime:
the share of the 0/k prompts that sampling does not reach within ``max_samples`` samples.

Regime statistics are means over the diagnose seeds; the interval of the reachable share pools the
counts over seeds (the resampled 0/k prompts and how many were reached) and is Clopper-Pearson's, the
interval ``cobarl diagnose`` reports by default.

Mixing is refused: two reports in one cell holding the same policy must hold the same settings and
the same runs (duplicates are read once); any other overlap is an error naming both reports. Every
report has the uniform baseline, so a cell never mixes run shapes or train options.

Writes ``regime_map.png``, ``regime_map.md`` and ``regime_map.json`` (the format `cobarl diagnose`
reads; ``--install PATH`` writes the same JSON there too).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cobarl.diagnose.placement import MAP_FORMAT, MAP_VERSION  # one definition: the reader's
from cobarl.diagnose.stats import clopper_pearson
from cobarl.experiments.report.regime_map_report import Cells, budgets, markdown, unreachable, write_outputs
from cobarl.experiments.report.report_stats import mean_ci
from cobarl.experiments.report.summary_io import ArmResult, ComparisonSummary, MeanCI, read_summary

DELTA_METRIC = "final_heldout_accuracy"
"""The paired gap mapped: at equal generated rollouts or equal steps, as the report's budget says."""
REGIME_KEYS = ("share_zero", "share_solved", "share_mixed", "reachable_of_zero")
_REPORT_SETTINGS = ("backend", "steps", "prompts_per_step", "rollouts_per_prompt", "budget_multiplier",
                    "budget_per_step", "accuracy_metric")


@dataclass(frozen=True)
class Report:
    """A compare report placed on the map: its preset and budget mode."""

    path: Path
    summary: ComparisonSummary
    preset: str
    budget: str
    train_args: tuple[str, ...]  # the recorded --train-args, split


@dataclass(frozen=True)
class Entry:
    """One policy in one cell: the report it comes from, its arm, and its paired gap (None: the baseline)."""

    report: Report
    label: str
    arm: ArmResult
    gap: MeanCI | None


def _option(tokens: list[str] | tuple[str, ...], name: str) -> str | None:
    """The value of ``name`` in split command-line ``tokens`` (``--x V`` or ``--x=V``; last one wins)."""
    value = None
    for k, tok in enumerate(tokens):
        if tok == name and k + 1 < len(tokens):
            value = tokens[k + 1]
        elif tok.startswith(name + "="):
            value = tok[len(name) + 1:]
    return value


def report_place(command: str, where: str) -> tuple[str, tuple[str, ...]]:
    """(preset, split --train-args) from a summary's recorded ``command``.

    >>> report_place("cobarl compare --backend real --train-args '--task families-u50 --cpu-threads 1'", "s")
    ('families-u50', ('--task', 'families-u50', '--cpu-threads', '1'))
    """
    from cobarl.tasks.embedded import DEFAULT_TASK, REGIMES

    text = _option(shlex.split(command), "--train-args")
    train = tuple(shlex.split(text)) if text else ()
    if _option(train, "--dataset") is not None:
        raise ValueError(f"{where}: trained on --dataset, not an embedded families task; the regime map places "
                         f"reports by preset ({', '.join(REGIMES)})")
    preset = _option(train, "--task") or DEFAULT_TASK
    if preset not in REGIMES:
        raise ValueError(f"{where}: task {preset!r} is not a regime preset ({', '.join(REGIMES)})")
    return preset, train


def load_report(path: str | Path) -> Report:
    """A finished real comparison whose baseline is plain uniform GRPO, placed by preset and budget."""
    path = Path(path)
    summary = read_summary(path / "summary.json" if path.is_dir() else path)
    where = str(path)
    if summary.backend != "real":
        raise ValueError(f"{where}: a {summary.backend!r} comparison; the regime map is of real runs (--backend real)")
    if summary.incomplete:
        raise ValueError(f"{where}: stopped early (summary.json: incomplete); finish it (cobarl compare) first")
    base = summary.strategies[summary.baseline]
    if base.allocator != "uniform" or base.overrides or base.budget_multiplier != 1.0:
        raise ValueError(f"{where}: baseline {summary.baseline!r} is not plain uniform GRPO at budget x1; the map is of "
                         "gaps against uniform (rerun with --baseline uniform)")
    preset, train = report_place(summary.settings["command"], where)
    return Report(path, summary, preset, summary.settings.get("budget", "generated"), train)


def arm_settings(report: Report, label: str) -> dict[str, Any]:
    """What a policy's result depends on besides its seeds: the run shape, train options and allocator
    settings (settings None drop out: older files lack options added since, which newer ones write as None)."""
    arm = report.summary.strategies[label]
    return {**{k: report.summary.settings[k] for k in _REPORT_SETTINGS}, "train_args": list(report.train_args),
            "allocator": arm.allocator, "overrides": arm.overrides, "arm_budget_multiplier": arm.budget_multiplier,
            **{f"allocator_config.{k}": v for k, v in arm.allocator_config.items() if v is not None}}


def _results(entry: Entry) -> tuple:
    accuracy = entry.arm.metrics.get(DELTA_METRIC)
    return (entry.arm.seeds, accuracy.values if accuracy else None, entry.gap.values if entry.gap else None)


def _same_policy(old: Entry, new: Entry, cell: str) -> None:
    """Refuse two reports holding one policy in one cell unless they hold the same settings and runs."""
    a, b = arm_settings(old.report, old.label), arm_settings(new.report, new.label)
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    both = f"{old.report.path} and {new.report.path}"
    if (old.gap is None) != (new.gap is None):
        raise ValueError(f"{cell}: {old.label!r} is the baseline in one of {both} and a compared arm in the other; "
                         "gaps would mix baselines: pass reports with the same baseline")
    if differ:
        shown = "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in differ[:4])
        raise ValueError(f"{cell}: {old.label!r} ran with different settings in {both} ({shown}); a cell takes one "
                         "setting per policy: pass only one of these reports for it")
    if _results(old) != _results(new):
        raise ValueError(f"{cell}: {old.label!r} has the same settings but different runs in {both} (seeds "
                         f"{list(old.arm.seeds)} vs {list(new.arm.seeds)}); pass only one of these reports")


def build_cells(reports: list[Report], policies: set[str] | None = None) -> dict[tuple[str, str], dict[str, Entry]]:
    """(preset, budget) -> label -> `Entry`; ``policies`` keeps only those labels (and the baselines)."""
    cells: dict[tuple[str, str], dict[str, Entry]] = {}
    for report in reports:
        cell = cells.setdefault((report.preset, report.budget), {})
        s = report.summary
        for label, arm in s.strategies.items():
            if label != s.baseline and policies is not None and label not in policies:
                continue
            if label != s.baseline and label not in s.gaps_vs_baseline:
                raise ValueError(f"{report.path}: {label!r} shares no seed with the baseline, so it has no paired gap")
            gap = None if label == s.baseline else s.gaps_vs_baseline[label].metrics[DELTA_METRIC]
            entry = Entry(report, label, arm, gap)
            if label in cell:
                _same_policy(cell[label], entry, f"{report.preset} ({report.budget})")
            else:
                cell[label] = entry
    for (preset, budget), cell in cells.items():
        base = sorted({e.label for e in cell.values() if e.gap is None})
        if len(base) > 1:
            raise ValueError(f"{preset} ({budget}): the reports' baselines are labelled {' and '.join(base)}; gaps "
                             "against two baselines do not mix: label uniform the same in every report")
    return cells


def _source(d: dict[str, Any], key: str, default: Any = None) -> Any:
    """A diagnose JSON's ``key`` (task, seed): under ``source`` as ``cobarl diagnose --json`` writes it, or at
    the top level."""
    return d.get(key, (d.get("source") or {}).get(key, default))


def _diagnose_counts(d: dict[str, Any], where: str) -> tuple[int, int]:
    """(prompts at 0/k resampled, of them reached): ``cobarl diagnose --json``'s counts (it resamples a random
    subset of the 0/k prompts), else ``n_zero``/``n_reachable_of_zero``, else ``prompts`` with the shares."""
    if isinstance(d.get("resampled"), dict) and "reachable_count" in d:
        return int(d["resampled"]["zero"]), int(d["reachable_count"])
    if "n_zero" in d and "n_reachable_of_zero" in d:
        return int(d["n_zero"]), int(d["n_reachable_of_zero"])
    if "prompts" not in d:
        raise ValueError(f"{where}: lacks the counts (n_zero and n_reachable_of_zero, or prompts) needed to pool the "
                         "reachable share over seeds; write it with cobarl diagnose --json")
    zero = float(d["share_zero"]) * int(d["prompts"])
    reached = (float(d["reachable_of_zero"]) if round(zero) else 0.0) * round(zero)
    if abs(zero - round(zero)) > 1e-6 or abs(reached - round(reached)) > 1e-6:
        raise ValueError(f"{where}: share_zero x prompts or reachable_of_zero x n_zero is not a whole count; "
                         "give n_zero and n_reachable_of_zero")
    return round(zero), round(reached)


def regime_stats(preset: str, docs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A preset's strategy-neutral statistics from its diagnose JSONs (one per seed): shares averaged over
    seeds, the reachable share's interval from the counts pooled over seeds."""
    if not docs:
        raise ValueError(f"--diagnose {preset}: no diagnose JSON given")
    for where, d in docs:
        missing = [k for k in ("k", "max_samples", *REGIME_KEYS) if k not in d]
        if missing:
            raise ValueError(f"{where}: not a cobarl diagnose JSON (lacks {', '.join(missing)})")
        if _source(d, "task", preset) != preset:
            raise ValueError(f"{where}: diagnoses task {_source(d, 'task', preset)!r}, given for --diagnose {preset}")
    for key in ("k", "max_samples"):
        values = {d[key] for _, d in docs}
        if len(values) > 1:
            raise ValueError(f"--diagnose {preset}: the JSONs disagree on {key} ({sorted(values)}); diagnose every "
                             "seed with the same settings")
    seeds = [_source(d, "seed") for _, d in docs if _source(d, "seed") is not None]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"--diagnose {preset}: the same seed given twice ({sorted(seeds)})")
    counts = [_diagnose_counts(d, where) for where, d in docs]
    zero, reached = sum(c[0] for c in counts), sum(c[1] for c in counts)
    out: dict[str, Any] = {"name": preset, "k": docs[0][1]["k"], "max_samples": docs[0][1]["max_samples"]}
    for key in REGIME_KEYS:
        values = [float(d[key]) for _, d in docs if d[key] is not None]
        out[key] = sum(values) / len(values) if values else None
    # pooled over seeds, with the interval cobarl diagnose reports by default
    out["reachable_of_zero_ci"] = list(clopper_pearson(reached, zero)) if zero else None
    return out


def read_diagnose(spec: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """``PRESET=PATH[,PATH...]`` (a folder stands for its ``*.json``) -> (preset, [(path, JSON)])."""
    preset, sep, paths = spec.partition("=")
    if not sep or not preset or not paths:
        raise ValueError(f"--diagnose {spec!r}: expected PRESET=PATH[,PATH...], e.g. families-u50=d0.json,d1.json")
    files: list[Path] = []
    for p in map(Path, paths.split(",")):
        files += sorted(p.glob("*.json")) if p.is_dir() else [p]
    docs = []
    for f in files:
        try:
            docs.append((str(f), json.loads(f.read_text())))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--diagnose {preset}: cannot read {f} ({err})") from None
    return preset, docs


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def uniform_gain(cell: dict[str, Entry]) -> dict[str, Any]:
    """The baseline's held-out gain, final - initial accuracy, paired by seed (`mean_ci`)."""
    base = next(e for e in cell.values() if e.gap is None)
    first, last = base.arm.metrics["initial_heldout_accuracy"], base.arm.metrics[DELTA_METRIC]
    if len(first.values) != len(base.arm.seeds) or len(last.values) != len(base.arm.seeds):
        raise ValueError(f"{base.report.path}: {base.label!r} lacks its initial or final held-out accuracy on some "
                         "seed, so its gain cannot be paired by seed")
    return mean_ci([b - a for a, b in zip(first.values, last.values)])


def regime_map(cells: dict[tuple[str, str], dict[str, Entry]], regimes: dict[str, dict[str, Any]],
               measured_on: str) -> dict[str, Any]:
    """The ``cobarl.regime-map`` JSON: one regime per preset (by unreachable share), its paired deltas per budget."""
    presets = {p for p, _ in cells}
    missing = sorted(presets - set(regimes))
    if missing:
        raise ValueError(f"no diagnose JSON for {', '.join(missing)}: add --diagnose {missing[0]}=PATH,... "
                         f"(cobarl diagnose --task {missing[0]} --json, one per seed)")
    nowhere = sorted(p for p in presets if math.isnan(unreachable(regimes[p])))
    if nowhere:
        raise ValueError(f"--diagnose {nowhere[0]}: no prompt at 0/k, so the regime has no place on the map")
    extra = sorted(set(regimes) - presets)
    if extra:
        raise ValueError(f"--diagnose {extra[0]}: no compare report for that preset; pass one or drop it")
    out = []
    for preset in sorted(presets, key=lambda p: unreachable(regimes[p])):
        here = [b for b in budgets(cells) if (preset, b) in cells]
        gain = uniform_gain(cells[(preset, here[0])])
        deltas = {b: {e.label: {"mean": _finite(e.gap.mean), "ci": [_finite(v) for v in e.gap.ci95], "seeds": e.gap.n}
                      for e in cells[(preset, b)].values() if e.gap is not None} for b in here}
        out.append({**regimes[preset], "uniform_gain": _finite(gain["mean"]), "deltas": deltas})
    return {"format": MAP_FORMAT, "version": MAP_VERSION, "measured_on": measured_on, "regimes": out}


def measured_on_text(reports: list[Report], note: str | None) -> str:
    """Task, model, seeds and run shape, from the reports (the machine only from ``note``)."""
    s = [r.summary.settings for r in reports]
    shapes = sorted({f"{x['steps']} steps x {x['prompts_per_step']} prompts x {x['rollouts_per_prompt']:g} rollouts"
                     for x in s})
    seeds = sorted({tuple(x["seeds"]) for x in s})
    models = sorted({_option(r.train_args, "--model") or "the task's warm-started tiny model" for r in reports})
    text = (f"embedded task presets {', '.join(sorted({r.preset for r in reports}))}; real cobarl compare runs "
            f"(budgets: {', '.join(budgets({(r.preset, r.budget): 0 for r in reports}))}); model: {', '.join(models)}; "
            f"seeds {'; '.join(','.join(map(str, x)) for x in seeds)}; {'; '.join(shapes)}")
    return f"{note}; {text}" if note else f"{text}; machine not recorded"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cobarl.experiments.report.regime_map",
                                description="Map each policy's held-out gain over uniform GRPO along the task's regimes "
                                "(from real cobarl compare reports and cobarl diagnose JSONs).")
    p.add_argument("reports", nargs="+", metavar="REPORT_DIR", help="cobarl compare report folders (real back-end).")
    p.add_argument("--diagnose", action="append", default=[], metavar="PRESET=PATH[,PATH...]",
                   help="A preset's cobarl diagnose --json outputs, one per seed (a folder: its *.json); once per preset.")
    p.add_argument("--out", required=True, help="Folder for regime_map.png, regime_map.md and regime_map.json.")
    p.add_argument("--install", default=None, metavar="PATH",
                   help="Also write the JSON here, e.g. cobarl/data/regime_map.json (what cobarl diagnose reads).")
    p.add_argument("--strategies", default=None, help="Only these policies (comma-separated labels); default: all arms.")
    p.add_argument("--measured-on", default=None, metavar="TEXT",
                   help="Machine (and anything else the reports do not record), put before the recorded settings.")
    return p


def build(report_paths: list[str | Path], diagnose: list[str], policies: set[str] | None = None,
          measured_on: str | None = None) -> tuple[dict[str, Any], Cells, str]:
    """(the ``cobarl.regime-map`` JSON, its cells, regime_map.md) from report folders and ``--diagnose`` specs;
    everything is read and checked before anything is written."""
    reports = [load_report(p) for p in report_paths]
    cells = build_cells(reports, policies)
    if policies is not None:
        ran = {label for cell in cells.values() for label in cell}
        if policies - ran:
            raise ValueError(f"--strategies: {', '.join(sorted(policies - ran))} in none of the reports")
    regimes: dict[str, dict[str, Any]] = {}
    sources: dict[str, list[str]] = {}
    for spec in diagnose:
        preset, docs = read_diagnose(spec)
        if preset in regimes:
            raise ValueError(f"--diagnose {preset} given twice; list every seed's JSON in one --diagnose")
        regimes[preset], sources[preset] = regime_stats(preset, docs), [where for where, _ in docs]
    data = regime_map(cells, regimes, measured_on_text(reports, measured_on))
    gains = {key: uniform_gain(cell) for key, cell in cells.items()}
    commands = [f"- {r.preset} ({r.budget}), `{r.path}`: `{r.summary.settings['command']}`" for r in reports]
    return data, cells, markdown(data, cells, gains, commands, sources)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    try:
        if (out / "summary.json").exists():
            raise ValueError(f"--out {out} holds a compare report; write the regime map to a folder of its own")
        policies = set(args.strategies.split(",")) if args.strategies else None
        data, cells, md = build(args.reports, args.diagnose, policies, args.measured_on)
        import matplotlib  # noqa: F401  (checked before anything is written)
    except ImportError:
        print("regime map: error: regime_map.png needs matplotlib (pip install 'cobarl[report]')", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:
        print(f"regime map: error: {err}", file=sys.stderr)
        return 2
    for path in write_outputs(data, cells, md, out, args.install):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
