"""``cobarl compare``'s command line: its parser, and the `CompareOptions` it gives (``--against`` takes
them from a real comparison); every check that can refuse them before a run starts. The command itself,
which runs them and writes the report, is `cobarl.experiments.comparison.cli`."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from cobarl.strategies import STRATEGIES
from cobarl.policies import make_policy
from cobarl.cli_checks import integer, number
from cobarl.experiments.comparison.backends import BACKENDS, effective_strategy
from cobarl.experiments.comparison.grid import expand_grid, parse_grid
from cobarl.experiments.comparison.pool import default_workers
from cobarl.experiments.comparison.runs import BUDGETS, CompareOptions
from cobarl.experiments.comparison.specs import DEFAULT_STRATEGIES, PRESETS, parse_strategies
from cobarl.experiments.simulation.sim_vs_real import mirrored_strategies, real_comparison_settings
from cobarl.experiments.report.summary_io import SummaryFormatError, read_summary
from cobarl.experiments.simulation.sim_presets import SIM_PRESETS
from cobarl.experiments.comparison.train_args import train_args
from cobarl.experiments.simulation.sim_model import SimConfig

DEFAULT_PRESET = "default"


def build_parser(prog: str = "cobarl compare", preset: str = DEFAULT_PRESET) -> argparse.ArgumentParser:
    """The parser; the run shape and simulator flags default to ``SIM_PRESETS[preset]`` (an unknown name
    falls back to the default preset, and ``--sim-preset``'s choices then refuse it)."""
    shape = SIM_PRESETS.get(preset, SIM_PRESETS[DEFAULT_PRESET])
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run several strategies (each a rollout policy with its options) on the same task with the same seeds and write "
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
        help="Tuning sweep over the options of the one --strategies spec (its policy's options, as cobarl train "
        "flags: kappa, tau, max_budget, max_rounds, p_easy, ...): every combination of the values, on the same seeds, plus the "
        "base configuration; the report chooses by validation accuracy (a split apart from held-out). Repeat it "
        "or separate options with ';', e.g. --grid 'kappa=7,11,15;max_budget=32,128'. Either back-end.",
    )
    p.add_argument(
        "--against",
        nargs="+",
        default=None,
        metavar="REAL_DIR",
        help="Check the simulator against a real comparison: run the simulator with the strategies (each with the "
        "strategy settings it ran with), seeds, steps and budgets of REAL_DIR/summary.json (a 'cobarl compare "
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
                   "compare sets itself (the strategy and its options, seed, steps, prompts and rollouts per step, "
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
    options = CompareOptions(
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
        baseline=None if args.grid else args.baseline,
        real_options=train_args(args.train_args, args.backend),
    )
    if not args.grid:
        return options
    if len(strategies) != 1:
        raise ValueError(f"--grid sweeps the options of one strategy, its base configuration; --strategies gave "
                         f"{len(strategies)}: {', '.join(s.label for s in strategies)}")
    try:
        # what the base arm runs with on this back-end (the real back-end adds the task's preset)
        base = effective_strategy(strategies[0], options)
        specs, grid = expand_grid(strategies[0], parse_grid(args.grid), args.steps, base_config=base)
    except ValueError as err:
        raise ValueError(f"--grid {err}") from None
    # Only a sweep reads validation accuracy; other real runs skip its evaluation.
    validation = {"validation_size": args.validation_prompts} if args.backend == "real" else {}
    return replace(options, strategies=tuple(specs), grid=grid, baseline=args.baseline or grid.base,
                   real_options={**validation, **options.real_options})


def check_options(options: CompareOptions) -> None:
    """What would otherwise fail inside a run, after others have started: each arm's allocator
    settings, and the simulator's batch size."""
    for spec in options.strategies:
        try:
            make_policy(spec.strategy_config(options.steps))
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


def preset_name(argv: list[str]) -> str:
    """``--sim-preset`` alone, read first because the preset sets the other flags' defaults."""
    return explicit_preset(argv) or DEFAULT_PRESET


def explicit_preset(argv: list[str]) -> str | None:
    """``--sim-preset`` when given on the command line (also abbreviated), else None."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--sim-preset", default=None)
    return pre.parse_known_args(argv)[0].sim_preset
