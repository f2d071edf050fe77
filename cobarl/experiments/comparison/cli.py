"""``cobarl compare``: run strategies side by side (same task, same seeds) and write one report.

Examples::

    cobarl compare                                   # the 8 default strategies x 5 seeds, simulated
    cobarl compare --strategies uniform,coba,coba@0.5 --seeds 10 --output-dir runs/half
    cobarl compare --budget-multiplier 0.5           # every strategy at half budget
    python -m cobarl.experiments --strategies all --steps 100
    cobarl compare --strategies coba --grid "kappa=7,11,15;max_budget=32,64,128"   # tuning sweep
    cobarl compare --against runs/real-cmp          # the simulator, checked against a real comparison
    cobarl compare --sim-preset families-v4 --against runs/real-v4   # ... shaped and calibrated like task v4
    cobarl compare --against runs/map/*             # ... cell by cell against a regime map (one preset per task)
    cobarl compare --strategies uniform,coba,dapo --output-dir runs/half   # continue it: only dapo runs
    cobarl compare --sim-accuracy                   # show the simulated accuracy anyway (not a prediction)

Every finished run is kept in ``<output-dir>/runs/`` (`cobarl.experiments.comparison.run_store`), so the same
command again continues an interrupted comparison, and one with more arms or seeds runs only those.
This module runs a comparison and writes its report; its command line (the parser, the `CompareOptions` it
gives, the checks before any run) is `cobarl.experiments.comparison.cli_args`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cobarl.cli_checks import writable_dir
from cobarl.experiments.comparison.backends import BackendUnavailable
from cobarl.experiments.comparison.cli_args import (
    apply_against,
    build_parser,
    check_options,
    explicit_preset,
    options_from_args,
    preset_name,
)
from cobarl.experiments.comparison.compare import CompareInterrupted, RunFailed, run_compare
from cobarl.experiments.report.console import print_table
from cobarl.signals import sigterm_as_interrupt
from cobarl.experiments.comparison.runs import CompareOptions, RunResult
from cobarl.experiments.comparison.run_store import RUNS_DIR, RunStore
from cobarl.experiments.report.report import FILES, write_report
from cobarl.io import FolderLock
from cobarl.experiments.simulation.sim_map import MAP_FILES, map_plan, write_map_report
from cobarl.experiments.report.summary_io import read_summary
from cobarl.experiments.simulation.sim_trust import is_a_prediction

TRAIN_DIR = "train"
"""Subfolder of a real comparison's output folder that holds its runs' ``cobarl train`` folders."""
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), also when the finished runs were written."""
TERMINATED = 143
"""Exit status after SIGTERM (128 + SIGTERM), also when the finished runs were written."""


def main(argv: list[str] | None = None, *, prog: str = "cobarl compare") -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(prog, preset_name(argv))
    args = parser.parse_args(argv)
    out = Path(args.output_dir or f"runs/compare-{datetime.now():%Y%m%d-%H%M%S}")
    if args.against is not None and len(args.against) > 1:
        return _compare_map(args, argv, out, prog)
    try:
        against = apply_against(args, argv, parser)
        options = options_from_args(args)
        if options.backend == "real":  # every run's folder inside the comparison's own
            options = replace(options, run_root=str(out / TRAIN_DIR))
        check_options(options)
        writable_dir(out, "the report")
        check_no_report(out)
        lock = FolderLock(out, "report").acquire()
    except (ValueError, TypeError, FileExistsError) as err:
        return _error(prog, err)
    command = " ".join(["cobarl compare", *map(shlex.quote, argv)])
    try:
        try:
            store = RunStore(out, options, command)  # under the lock: no other compare writes its runs
        except ValueError as err:
            return _error(prog, err)
        return _compare(args, options, out, store, against, prog)
    finally:
        lock.release(remove_if_created=True)


def check_no_report(out: Path) -> None:
    """Refuse a folder holding a report without its runs (written before compare kept them, or not by compare):
    a report continues only from its runs, and writing into it would silently replace it."""
    found = [name for name in FILES if (out / name).exists()]
    if found and not (out / RUNS_DIR).is_dir():
        raise FileExistsError(f"{out} already holds a report ({', '.join(found)}) but not its runs ({RUNS_DIR}/), so it "
                              "cannot be continued and writing into it would replace it. Pass another -o/--output-dir, "
                              "or move the old report away")


def _compare(args, options, out: Path, store: RunStore, against, prog: str, *, failures: str = "refuse") -> int:
    """One comparison into ``out``. A run its policy stops (`RunFailed`) ends it with the message
    (``failures="refuse"``), or is raised for the caller (``"raise"``: the map check)."""
    command, start = store.command, time.perf_counter()
    if store.reused:
        print(f"{out}: reusing {len(store.reused)} finished runs of {len(options.strategies) * len(options.seeds)}",
              file=sys.stderr)
    try:
        with sigterm_as_interrupt():
            runs = run_compare(options, progress=not args.no_progress, done=store.reused, keep=store.keep)
    except CompareInterrupted as stop:
        status = _keep_finished(stop.runs, options, out, store=store, prog=prog)
        return TERMINATED if stop.terminated else status
    except RunFailed as err:
        if failures == "raise":
            raise
        print(f"{prog}: {len(store.reused)} reused and the runs finished before it are kept in {out}/runs; "
              "the same command continues", file=sys.stderr)
        return _error(prog, err)
    except (BackendUnavailable, ValueError, TypeError) as err:  # a run refused its settings
        return _error(prog, err)
    summary = write_report(runs, options, out, command=command, plots=not args.no_plots, against=against,
                           provenance=store.provenance(runs))
    print(f"{len(runs) - len(store.reused)} runs in {time.perf_counter() - start:.1f} s"
          + (f" ({len(store.reused)} reused)" if store.reused else "") + f"; report in {out}/report.md", file=sys.stderr)
    print_table(summary)
    if "simulator_check" in summary:
        rc = summary["simulator_check"]["rank_correlation"]
        def corr(x):
            return "n/a" if x is None else f"{x:+.2f}"

        print(f"  simulator vs real: rank correlation of held-out accuracy {corr(rc['final_heldout_accuracy'])}, "
              f"of effective ratio {corr(rc['effective_ratio'])} (report.md has the gaps side by side)", file=sys.stderr)
    if summary.get("grid") and summary["grid"]["chosen"]:
        g = summary["grid"]
        c = g["configs"][g["chosen"]]
        print(f"  chosen by validation accuracy: {g['chosen']}  validation {c['validation_accuracy']['mean']:.4f}  "
              f"held-out {c['heldout_accuracy']['mean']:.4f}" + ("  (the base configuration)" if g["chosen_is_base"] else "")
              + ("" if is_a_prediction(options.backend) else "  (simulated accuracy: not a prediction)"), file=sys.stderr)
    return 0


def _error(prog: str, err: Exception) -> int:
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 2


def _keep_finished(runs: list[RunResult], options: CompareOptions, out: Path, *, store: RunStore, prog: str) -> int:
    """After Ctrl-C: the report of the finished runs (no plots, to stop quickly); exit status 130."""
    planned = len(options.strategies) * len(options.seeds)
    if not runs:
        print(f"{prog}: interrupted before any run finished; nothing written", file=sys.stderr)
        return INTERRUPTED
    done = {r.label for r in runs}
    kept = tuple(s for s in options.strategies if s.label in done)
    partial = replace(options, strategies=kept, baseline=options.baseline if options.baseline in done else None)
    finished = {(r.label, r.seed) for r in runs}
    missing = [f"{s.label} seed {seed}" for s in options.strategies for seed in options.seeds if (s.label, seed) not in finished]
    try:
        write_report(runs, partial, out, command=store.command, plots=False, provenance=store.provenance(runs),
                     incomplete={"finished_runs": len(runs), "planned_runs": planned, "missing": missing})
    except KeyboardInterrupt:
        print(f"{prog}: interrupted again while writing {out}; it may lack some files", file=sys.stderr)
        return INTERRUPTED
    print(f"{prog}: interrupted; {len(runs)} of {planned} runs finished, their report (no plots) is in "
          f"{out}/report.md; the same command continues it", file=sys.stderr)
    return INTERRUPTED


# --- --against with several real comparisons: the simulator checked cell by cell against a regime map ---


def _compare_map(args: argparse.Namespace, argv: list[str], out: Path, prog: str) -> int:
    """One simulated comparison per real one, each with the preset named as its task, in OUT/<task>-x<budget>/;
    then the cells of all (`cobarl.experiments.simulation.sim_map`) in OUT/report.md and OUT/map_check.json. Every
    comparison is set up and checked before the first run."""
    try:
        plan = map_plan(args.against, explicit_preset(argv))
        jobs = []
        for real_dir, preset, name in plan:
            parser = build_parser(prog, preset)
            sub = parser.parse_args(argv)
            sub.against, sub.sim_preset, sub.output_dir = [real_dir], preset, str(out / name)
            against = apply_against(sub, argv, parser)
            options = options_from_args(sub)
            check_options(options)
            jobs.append((sub, options, against))
        writable_dir(out, "the report")
        found = [name for name in MAP_FILES if (out / name).exists()] + [n for _, _, n in plan if (out / n).exists()]
        if found:
            raise FileExistsError(f"{out} already holds {', '.join(found)}; pass another -o/--output-dir")
        lock = FolderLock(out, "report").acquire()
    except (ValueError, TypeError, FileExistsError) as err:
        return _error(prog, err)
    try:
        summaries, failed = [], []
        command = " ".join(["cobarl compare", *map(shlex.quote, argv)])
        for sub, options, against in jobs:
            rc = _mirror(sub, options, against, command, prog, failed)
            if rc != 0:
                print(f"{prog}: the map check was not written (a comparison did not finish)", file=sys.stderr)
                return rc
            summaries.append(read_summary(Path(sub.output_dir) / "summary.json").to_dict())
        check = write_map_report(out, plan, summaries, command=command, failed=failed)
        print(f"  simulator vs real map, {len(check['cells'])} cells: {check['verdict']['text']} "
              f"(report in {out}/report.md)", file=sys.stderr)
        return 0
    finally:
        lock.release(remove_if_created=True)


def _mirror(sub, options, against, command: str, prog: str, failed: list) -> int:
    """One simulated comparison of the map check. An arm the simulator cannot run (its policy stops, e.g.
    DAPO finding no mixed group on a saturated simulated task) is dropped and recorded in ``failed``: its
    cells then have no simulated value and count as disagreeing, never as skipped."""
    while True:
        try:
            store = RunStore(Path(sub.output_dir), options, command)
            return _compare(sub, options, Path(sub.output_dir), store, against, prog, failures="raise")
        except ValueError as err:
            return _error(prog, err)
        except RunFailed as err:
            print(f"{prog}: the simulator cannot run {err}; its cells count as disagreeing", file=sys.stderr)
            failed.append({"report": Path(sub.output_dir).name, "policy": err.label, "seed": err.seed,
                           "reason": err.reason})
            options = replace(options, strategies=tuple(s for s in options.strategies if s.label != err.label))


if __name__ == "__main__":
    raise SystemExit(main())
