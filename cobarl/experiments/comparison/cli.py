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
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cobarl.allocator import STRATEGIES
from cobarl.policies import make_policy
from cobarl.cli_checks import integer, number, writable_dir
from cobarl.experiments.comparison.backends import BACKENDS, BackendUnavailable, effective_allocator
from cobarl.experiments.comparison.compare import CompareInterrupted, RunFailed, run_compare
from cobarl.experiments.report.console import print_table
from cobarl.experiments.comparison.grid import expand_grid, parse_grid
from cobarl.experiments.comparison.pool import default_workers
from cobarl.signals import sigterm_as_interrupt
from cobarl.experiments.comparison.runs import BUDGETS, CompareOptions, RunResult
from cobarl.experiments.comparison.run_store import RUNS_DIR, RunStore
from cobarl.experiments.comparison.specs import DEFAULT_STRATEGIES, PRESETS, parse_strategies
from cobarl.experiments.report.report import FILES, write_report
from cobarl.io import FolderLock
from cobarl.experiments.simulation.sim_vs_real import mirrored_strategies, real_comparison_settings
from cobarl.experiments.simulation.sim_map import MAP_FILES, map_plan, write_map_report
from cobarl.experiments.report.summary_io import SummaryFormatError, read_summary
from cobarl.experiments.simulation.sim_presets import SIM_PRESETS
from cobarl.experiments.comparison.train_args import train_args
from cobarl.experiments.simulation.sim_trust import is_a_prediction
from cobarl.experiments.simulation.simulator import SimConfig

DEFAULT_PRESET = "default"
TRAIN_DIR = "train"
"""Subfolder of a real comparison's output folder that holds its runs' ``cobarl train`` folders."""
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT), also when the finished runs were written."""
TERMINATED = 143
"""Exit status after SIGTERM (128 + SIGTERM), also when the finished runs were written."""


def build_parser(prog: str = "cobarl compare", preset: str = DEFAULT_PRESET) -> argparse.ArgumentParser:
    """The parser; the run shape and simulator flags default to ``SIM_PRESETS[preset]`` (an unknown name
    falls back to the default preset, and ``--sim-preset``'s choices then refuse it)."""
    shape = SIM_PRESETS.get(preset, SIM_PRESETS[DEFAULT_PRESET])
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run several rollout-allocation strategies on the same task with the same seeds and write "
        "summary.json, metrics.csv, plots and report.md. Every finished run is kept in OUTPUT_DIR/runs/: the same "
        "--output-dir again continues the comparison, reusing the runs finished with the same settings and running "
        "only the others (an interrupted comparison, or one with more --strategies or seeds); a folder whose runs "
        "have other settings is refused. Ctrl-C stops at once and writes the finished runs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        default=None,
        help="Comma/space-separated specs NAME[:key=value,...][@MULTIPLIER]; 'default' = the default strategies below, "
        f"'all' = every strategy. Strategies: {', '.join(STRATEGIES)}; presets: {', '.join(PRESETS)}, and any fixed-beta-A-B. "
        f"Examples: coba:kappa=7, coba@0.5 (half budget). Default: {', '.join(DEFAULT_STRATEGIES)}; with --grid: coba "
        "(a sweep takes exactly one, its base configuration).",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="OPTION=V1,V2,...[;OPTION=...]",
        help="Tuning sweep over allocator options (AllocatorConfig fields: kappa, tau, max_budget, min_budget, "
        "window, ...) of the one --strategies spec: every combination of the values, on the same seeds, plus the "
        "base configuration; the report chooses by validation accuracy (a split apart from held-out). Repeat it "
        "or separate options with ';', e.g. --grid 'kappa=7,11,15;max_budget=32,128'. Either back-end.",
    )
    p.add_argument(
        "--against",
        nargs="+",
        default=None,
        metavar="REAL_DIR",
        help="Check the simulator against a real comparison: run the simulator with the strategies (each with the "
        "allocator settings it ran with), seeds, steps and budgets of REAL_DIR/summary.json (a 'cobarl compare "
        "--backend real' report) and add the rank correlation, the side-by-side gaps and the cell-by-cell verdict "
        "to this report. Those options then come from REAL_DIR and may not be given. Several REAL_DIRs (a regime "
        "map): one simulated comparison each, with the --sim-preset named as its --task, in OUTPUT_DIR/<task>-x<budget>/, "
        "and the cell-by-cell check of all of them in OUTPUT_DIR/report.md and map_check.json.",
    )
    _add_run_options(p, shape)
    _add_simulator_options(p, shape.sim)
    return p


def _add_run_options(p: argparse.ArgumentParser, shape) -> None:
    """Back-end, seeds, run shape, output and the real back-end's cobarl train options."""
    p.add_argument("--backend", choices=list(BACKENDS), default="simulated", help="simulated (no LLM) or real (cobarl train).")
    p.add_argument("--seeds", type=integer(1), default=5, help="Number of seeds, 0..N-1 (ignored with --seed-list).")
    p.add_argument("--seed-list", type=str, default=None, help="Explicit comma-separated seeds, e.g. 3,7,11.")
    p.add_argument("--steps", type=integer(1), default=shape.steps, help="Training steps per run.")
    p.add_argument("--budget", choices=BUDGETS, default="generated",
                   help="What every run gets the same of: 'generated' rollouts (default: a run ends once it generated "
                   "what --steps steps of its budget generate without rounds, so policies that generate more than "
                   "they train on take fewer steps, and real runs decay the learning rate in generated rollouts) or "
                   "'steps' (every run trains --steps steps, whatever it generates).")
    p.add_argument("--prompts-per-step", type=integer(1), default=shape.prompts_per_step, help="M, prompts per step.")
    p.add_argument("--rollouts-per-prompt", type=number(0, above=True), default=shape.rollouts_per_prompt,
                   help="G, rollouts per prompt on average (sets the budget).")
    p.add_argument("--budget-multiplier", type=number(0, above=True), default=1.0,
                   help="Scale every strategy's budget, e.g. 0.5 for half budget.")
    p.add_argument("--baseline", default=None, help="Label the gaps are measured against (default: uniform if run).")
    p.add_argument("--target-accuracy", type=number(0, 1), default=None,
                   help="Held-out accuracy for 'rollouts to target' (default: on each seed, the baseline's final "
                   "accuracy on that seed).")
    p.add_argument("--output-dir", default=None, help="Report folder (default: runs/compare-<timestamp>). One that holds "
                   "a comparison continues it: its runs with the same settings are reused, the report is rewritten "
                   "over all the runs of this command's strategies and seeds.")
    p.add_argument("--workers", type=integer(1), default=default_workers(), help="Parallel processes.")
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")
    p.add_argument("--no-plots", action="store_true", help="Skip the PNG plots (faster; no matplotlib needed).")
    p.add_argument("--sim-accuracy", action="store_true", help="Simulated back-end: show simulated accuracy anyway, "
                   "for research; it is not a prediction of real accuracy (report.md says why it is left out).")
    p.add_argument("--validation-prompts", type=integer(1), default=shape.sim.validation_prompts,
                   help="Validation prompts, apart from train and held-out; --grid chooses on them. Simulated: same "
                   "clusters; real: cobarl train --validation-size (with --grid only).")
    p.add_argument("--train-args", default=None, metavar="'OPTIONS'",
                   help="Real back-end: any other cobarl train options for every run, as on its command line, e.g. "
                   "--train-args '--task arith-v3 --train-size 1024 --learning-rate 3e-4 --cpu-threads 1'. The options "
                   "compare sets itself (strategy and allocator options, seed, steps, prompts and rollouts per step, "
                   "output dir) are refused there.")


def _add_simulator_options(p: argparse.ArgumentParser, base: SimConfig) -> None:
    """The simulated task's flags, defaulting to ``base`` (the chosen ``--sim-preset``)."""
    sim = p.add_argument_group("simulator (--backend simulated)")
    sim.add_argument("--sim-preset", choices=list(SIM_PRESETS), default=DEFAULT_PRESET,
                     help="Simulated task and run shape: 'default' (the documented simulator) or 'families-v4' (shaped "
                     "like the embedded task v4 and calibrated on its strategy-neutral measurements: 24 clusters with "
                     "the families' starting pass rates, 300 steps of 16 prompts x 8 rollouts; see docs/simulator-v4.md); "
                     "'families-u50'/'families-u90': v4's learner on the task regimes of those names, their unreachable "
                     "families as clusters whose rewards are always 0 (docs/task-regimes.md). "
                     "It sets the defaults of the flags below and of --steps, --prompts-per-step, "
                     "--rollouts-per-prompt and --validation-prompts; a flag given explicitly still wins.")
    sim.add_argument("--train-prompts", type=integer(1), default=base.train_prompts, help="Prompts in the train split.")
    sim.add_argument("--heldout-prompts", type=integer(1), default=base.heldout_prompts, help="Held-out prompts (same clusters).")
    sim.add_argument("--clusters", type=integer(1), default=base.clusters, help="Clusters of related prompts.")
    sim.add_argument("--skill-mean", type=number(), default=base.skill_mean, help="Mean initial cluster skill (logits).")
    sim.add_argument("--skill-std", type=number(0), default=base.skill_std, help="Spread of initial cluster skills.")
    sim.add_argument("--difficulty-std", type=number(0), default=base.difficulty_std, help="Spread of prompt difficulties.")
    sim.add_argument("--lr", type=number(0), default=base.lr,
                     help="Adam learning rate on the logits: the step is lr x gradient / RMS of the gradient noise.")
    sim.add_argument("--transfer", type=number(0, 1), default=base.transfer, help="Share of a prompt's step given to its cluster.")


def _seeds(args: argparse.Namespace) -> tuple[int, ...]:
    if not args.seed_list:
        return tuple(range(args.seeds))
    try:
        return tuple(int(s) for s in args.seed_list.split(","))
    except ValueError:
        raise ValueError(f"--seed-list takes comma-separated integers, e.g. 3,7,11; got {args.seed_list!r}") from None


def _sim_config(args: argparse.Namespace) -> SimConfig:
    """The simulated task from the flags and ``--sim-preset``; flags a preset would ignore are refused."""
    preset = SIM_PRESETS[getattr(args, "sim_preset", DEFAULT_PRESET)]
    skills = preset.sim.cluster_skills  # a preset's per-cluster starting skills have no flag of their own
    if args.backend != "simulated" and getattr(args, "sim_preset", DEFAULT_PRESET) != DEFAULT_PRESET:
        raise ValueError("--sim-preset sets the simulator; the real back-end takes its task from cobarl train "
                         "(--train-args '--task ...'); drop one of them")
    if skills is not None and (args.skill_mean, args.skill_std) != (preset.sim.skill_mean, preset.sim.skill_std):
        raise ValueError(f"--skill-mean/--skill-std: --sim-preset {args.sim_preset} sets each cluster's starting skill "
                         "itself, so they would have no effect; leave them out")
    if skills is not None and args.clusters != len(skills):
        raise ValueError(f"--clusters {args.clusters}: --sim-preset {args.sim_preset} fixes one starting skill per "
                         f"cluster for {len(skills)} clusters; leave --clusters out")
    return SimConfig(
        train_prompts=args.train_prompts,
        heldout_prompts=args.heldout_prompts,
        validation_prompts=args.validation_prompts,
        clusters=args.clusters,
        skill_mean=args.skill_mean,
        skill_std=args.skill_std,
        difficulty_std=args.difficulty_std,
        lr=args.lr,
        transfer=args.transfer,
        cluster_skills=skills,
        beyond_reach=preset.sim.beyond_reach,  # the regime: a property of the preset's task, no flag of its own
        wrong_reference=preset.sim.wrong_reference,
    )


def options_from_args(args: argparse.Namespace) -> CompareOptions:
    sim = _sim_config(args)
    seeds = _seeds(args)
    if args.sim_accuracy and args.backend != "simulated":
        raise ValueError("--sim-accuracy shows the simulator's accuracy; the real back-end always shows the accuracy "
                         "it measured; drop --sim-accuracy")
    default = ["coba"] if args.grid else [",".join(DEFAULT_STRATEGIES)]
    try:
        strategies = (args.strategies if isinstance(args.strategies, tuple)  # mirrored by --against
                      else tuple(parse_strategies(args.strategies or default)))
    except ValueError as err:
        raise ValueError(f"--strategies: {err}") from None
    grid = None
    if args.grid:
        if len(strategies) != 1:
            raise ValueError(f"--grid sweeps the options of one strategy, its base configuration; --strategies gave "
                             f"{len(strategies)}: {', '.join(s.label for s in strategies)}")
        try:
            grid_options = parse_grid(args.grid)
            # what the base arm runs with on this back-end (the real back-end adds the task's preset)
            base = effective_allocator(strategies[0], CompareOptions(
                strategies=strategies, seeds=seeds, steps=args.steps, prompts_per_step=args.prompts_per_step,
                rollouts_per_prompt=args.rollouts_per_prompt, budget_multiplier=args.budget_multiplier,
                backend=args.backend))
            specs, grid = expand_grid(strategies[0], grid_options, args.steps, base_config=base)
        except ValueError as err:
            raise ValueError(f"--grid {err}") from None
        strategies = tuple(specs)
    return CompareOptions(
        grid=grid,
        strategies=strategies,
        seeds=seeds,
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        rollouts_per_prompt=args.rollouts_per_prompt,
        budget_multiplier=args.budget_multiplier,
        backend=args.backend,
        sim=sim,
        workers=args.workers,
        target_accuracy=args.target_accuracy,
        budget=args.budget,
        sim_accuracy=args.sim_accuracy,
        baseline=args.baseline or (grid.base if grid else None),
        # Only a sweep reads validation accuracy; other real runs skip its evaluation.
        real_options={**({"validation_size": args.validation_prompts} if grid and args.backend == "real" else {}),
                      **train_args(args.train_args, args.backend)},
    )


def check_options(options: CompareOptions) -> None:
    """What would otherwise fail inside a run, after others have started: each arm's allocator
    settings, and the simulator's batch size."""
    for spec in options.strategies:
        try:
            make_policy(spec.allocator_config(options.steps))
        except (ValueError, TypeError) as err:
            raise ValueError(f"--strategies {spec.label!r}: {err}") from None
    if options.backend == "simulated" and options.prompts_per_step > options.sim.train_prompts:
        raise ValueError(f"--prompts-per-step {options.prompts_per_step} exceeds --train-prompts "
                         f"{options.sim.train_prompts}: each step takes distinct train prompts")


# The options `--against` takes from the real comparison (their flags may not be given with it).
_AGAINST_FLAGS = ("--strategies", "--seeds", "--seed-list", "--steps", "--prompts-per-step", "--rollouts-per-prompt",
                  "--budget-multiplier", "--baseline", "--grid", "--budget")


def apply_against(args: argparse.Namespace, argv: list[str], parser: argparse.ArgumentParser) -> tuple[str, dict] | None:
    """For ``--against REAL_DIR``: copy the real comparison's settings into ``args``; returns
    ``(REAL_DIR, its summary)``, or None without ``--against``."""
    if args.against is None:
        return None
    if args.backend != "simulated":
        raise ValueError("--against runs the simulator against a real comparison; drop --backend real")
    tokens = {a.split("=", 1)[0] for a in argv}
    given = [flag for flag in _AGAINST_FLAGS  # spelled out, or abbreviated to a value other than the default
             if flag in tokens or getattr(args, flag[2:].replace("-", "_")) != parser.get_default(flag[2:].replace("-", "_"))]
    if given:
        raise ValueError(f"--against takes {', '.join(given)} from the real comparison; leave {'it' if len(given) == 1 else 'them'} out")
    path = Path(args.against[0]) / "summary.json"
    try:
        real = read_summary(path)
    except (OSError, SummaryFormatError) as err:
        raise ValueError(f"--against: cannot read {path} ({err}); pass the folder of a 'cobarl compare --backend real' report") from None
    settings = real_comparison_settings(real)
    args.strategies = mirrored_strategies(settings)  # StrategySpecs, taken as they are by options_from_args
    args.seed_list = ",".join(str(seed) for seed in settings["seeds"])
    args.steps, args.prompts_per_step = settings["steps"], settings["prompts_per_step"]
    args.rollouts_per_prompt, args.budget_multiplier = settings["rollouts_per_prompt"], settings["budget_multiplier"]
    args.baseline = settings["baseline"]
    args.budget = settings["budget"] or args.budget
    return args.against[0], real.to_dict()


def _preset_name(argv: list[str]) -> str:
    """``--sim-preset`` alone, read first because the preset sets the other flags' defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--sim-preset", default=DEFAULT_PRESET)
    return pre.parse_known_args(argv)[0].sim_preset


def main(argv: list[str] | None = None, *, prog: str = "cobarl compare") -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(prog, _preset_name(argv))
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


if __name__ == "__main__":
    raise SystemExit(main())


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


def explicit_preset(argv: list[str]) -> str | None:
    """``--sim-preset`` when given on the command line (also abbreviated), else None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--sim-preset", default=None)
    return pre.parse_known_args(argv)[0].sim_preset
