"""Run several allocation strategies on one task with the same seeds: ``cobarl compare``.

A *backend* is a function ``(spec, seed, options) -> RunResult``: the per-step metric rows and a
final summary of one training run. Two are built in:

* ``simulated``: :mod:`cobarl.experiments.simulator` (no LLM; many seeds in seconds);
* ``real``: ``cobarl.experiments.real.run_training(config) -> dict`` (the ``cobarl train`` trainer).

Strategies are given as specs ``NAME[:key=value,...][@MULTIPLIER]``, e.g. ``coba``,
``fixed-beta-1.5-10.5``, ``coba:kappa=7`` or ``coba@0.5`` (half the rollouts of the others).

A tuning sweep (``--grid "kappa=7,11,15;max_budget=32,128"``) is a comparison whose arms are the
Cartesian product of allocator options over one base strategy (`expand_grid`), plus the base
configuration itself; the report selects by validation accuracy, never by held-out accuracy.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from typing import Any

from cobarl import metrics as M
from cobarl.allocator import STRATEGIES, AllocatorConfig
from cobarl.experiments.simulator import SimConfig, SimOptions, simulate
from cobarl.options import parse_option

# Preset name -> (allocator strategy, allocator overrides, description for the report).
PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "uniform": ("uniform", {}, "plain GRPO, every prompt gets the nominal group size"),
    "knapsack-rl": ("knapsack-rl", {}, "Knapsack-RL, public-code policy (cost caps, fallback to p=0 prompts)"),
    "coba": ("coba", {}, "CoBA-RL, paper Algorithm 1 (greedy on Eq. 9 over all prompts, tau = 8), solved exactly"),
    "coba-heap": ("coba-heap", {}, "CoBA-RL, paper Algorithm 1 with the literal max-heap"),
    "coba-reference": (
        "coba-reference",
        {"tau": "adaptive"},
        "CoBA-RL, public-code path (category split, 60-80 % heap share, (1-p) fallback, adaptive tau)",
    ),
    "knapsack": ("knapsack", {}, "Knapsack-RL value solved exactly over all prompts, no fallbacks"),
    "fixed-beta-10.5-1.5": ("fixed-beta", {"fixed_alpha": 10.5, "fixed_beta": 1.5}, "fixed Beta(10.5, 1.5): favours easy prompts"),
    "fixed-beta-1.5-10.5": ("fixed-beta", {"fixed_alpha": 1.5, "fixed_beta": 10.5}, "fixed Beta(1.5, 10.5): favours hard prompts"),
    "linear-decay": ("linear-decay", {}, "alpha stepped 10 -> 1 in equal stages over training (Table 3)"),
    "explore-to-exploit": ("explore-to-exploit", {}, "alpha follows the success rate instead of the failure rate (Table 2)"),
}
# The list: uniform GRPO, Knapsack-RL, CoBA-RL (Alg. 1 and public code), both fixed Betas,
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
# Set by the spec's name and by the run, not by key=value.
FIXED_FIELDS = tuple(f.name for f in fields(AllocatorConfig) if f.name == "strategy" or f.metadata.get("derived"))


@dataclass(frozen=True)
class StrategySpec:
    """One arm of a comparison.

    Attributes:
        label: name in the report (the spec string as typed, e.g. ``coba@0.5``).
        strategy: an allocator strategy name (``cobarl.STRATEGIES``) or a callable
            ``f(pass_rates, total_budget, min_budget, max_budget) -> counts``.
        overrides: extra :class:`cobarl.AllocatorConfig` fields.
        budget_multiplier: this arm's rollouts relative to the others (``@0.5`` = half).
    """

    label: str
    strategy: str | Callable
    overrides: dict[str, Any] = field(default_factory=dict)
    budget_multiplier: float = 1.0

    def allocator_config(self, total_steps: int) -> AllocatorConfig:
        return AllocatorConfig(strategy=self.strategy, total_steps=total_steps, **self.overrides)

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


def _parse_value(key: str, text: str) -> Any:
    return parse_option(AllocatorConfig, key, text, text=True)


def parse_strategy(spec: str) -> StrategySpec:
    """Parse ``NAME[:key=value,...][@MULTIPLIER]``; names are presets or allocator strategies.

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
    given: set[str] = set()
    for item in filter(None, opts.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in _option_names():
            raise ValueError(f"bad option {item!r} in {spec!r}; write key=value with key in: {', '.join(_option_names())}")
        if key in given:
            raise ValueError(f"option {key} given twice in {spec!r}; give each option once")
        given.add(key)
        try:
            overrides[key] = _parse_value(key, value.strip())
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


def _option_names() -> list[str]:
    return sorted(f.name for f in fields(AllocatorConfig) if f.name not in FIXED_FIELDS)


def parse_strategies(items: Sequence[str]) -> list[StrategySpec]:
    """Comma- or space-separated specs; ``all`` means every preset, ``default`` the issue's list.

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
                names.extend(PRESETS)
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


# --- tuning sweep (--grid) ------------------------------------------------------------------------

SELECTION_METRIC = M.EVAL_VALIDATION_ACCURACY
"""What a sweep selects on: accuracy on a validation split disjoint from train and held-out."""


@dataclass(frozen=True)
class Grid:
    """The arms of a tuning sweep.

    Attributes:
        options: option -> its values, in the order given (AllocatorConfig field names).
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
    for item in items:
        for part in filter(None, (x.strip() for x in item.split(";"))):
            key, eq, values = part.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in _option_names():
                raise ValueError(f"bad grid option {part!r}; write option=v1,v2,... with option in: {', '.join(_option_names())}")
            if key in grid:
                raise ValueError(f"option {key} is given twice")
            texts = [v.strip() for v in values.split(",")]
            if not all(texts):
                raise ValueError(f"{key}: empty value in {part!r}; write {key}=v1,v2,...")
            parsed = []
            for text in texts:
                try:
                    parsed.append(_parse_value(key, text))
                except ValueError as err:
                    raise ValueError(f"{key}={text}: {err}") from None
            if len(set(parsed)) != len(parsed):
                raise ValueError(f"{key}: a value repeats in {part!r}")
            grid[key] = tuple(parsed)
    if not grid:
        raise ValueError("empty grid; write e.g. kappa=7,11,15;max_budget=32,128")
    return grid


def format_value(v: Any) -> str:
    """An option value as written in a spec: ``7``, ``0.5``, ``adaptive``."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def grid_label(base: StrategySpec, values: dict[str, Any]) -> str:
    """The arm's label, itself a valid strategy spec: ``coba:kappa=11,max_budget=32`` (``@M`` kept)."""
    name, _, rest = base.label.partition("@")
    body, _, opts = name.partition(":")
    items = [*filter(None, opts.split(",")), *(f"{k}={format_value(v)}" for k, v in values.items())]
    return f"{body}:{','.join(items)}" + (f"@{rest}" if rest else "")


def expand_grid(base: StrategySpec, grid: dict[str, tuple[Any, ...]], steps: int,
                base_config: AllocatorConfig | None = None) -> tuple[list[StrategySpec], Grid]:
    """The Cartesian product of ``grid`` over ``base``, in the order given (last option fastest),
    and the base configuration itself when no grid point equals it.

    ``base_config``: the settings ``base`` actually runs with (`effective_allocator`; on the real
    back-end ``cobarl train``'s defaults, e.g. its max budget); default: `AllocatorConfig`'s.

    Every value is checked first on its own (the base with that one value), so a bad value is
    reported by option; then every combination (e.g. ``min_budget`` above ``max_budget``).
    """
    if not isinstance(base.strategy, str):
        raise ValueError("a grid needs a named strategy, not a callable")
    typed = base.label.partition("@")[0].partition(":")[2]  # options written in the spec (not a preset's)
    both = sorted(set(grid) & {item.partition("=")[0].strip().replace("-", "_") for item in typed.split(",") if item})
    if both:
        raise ValueError(f"{', '.join(both)} is set both in --strategies {base.label!r} and in the grid; set it in one place")
    for key, values in grid.items():
        for v in values:
            try:
                AllocatorConfig(strategy=base.strategy, total_steps=steps, **{**base.overrides, key: v})
            except (ValueError, TypeError) as err:
                raise ValueError(f"{key}={format_value(v)}: {err}") from None
    resolved = base_config or AllocatorConfig(strategy=base.strategy, total_steps=steps, **base.overrides).resolved()
    base_values = {k: getattr(resolved, k) for k in grid}
    specs: list[StrategySpec] = []
    points: dict[str, dict[str, Any]] = {}
    base_label = None
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        label = grid_label(base, values)
        spec = StrategySpec(label, base.strategy, {**base.overrides, **values}, base.budget_multiplier)
        try:
            spec.allocator_config(steps)
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


@dataclass(frozen=True)
class CompareOptions:
    """Everything one comparison needs (the CLI fills it).

    Attributes:
        strategies: the arms.
        seeds: run every arm once per seed (same seeds for every arm).
        steps: training steps per run.
        prompts_per_step: M, prompts per step.
        rollouts_per_prompt: G, average rollouts per prompt; the budget per step is
            ``M * G * budget_multiplier * spec.budget_multiplier``.
        budget_multiplier: scales every arm's budget (``0.5`` = a half-budget comparison).
        backend: ``"simulated"`` or ``"real"``.
        sim: simulator settings (simulated backend only).
        workers: processes running seeds in parallel (1 = in this process).
        target_accuracy: held-out accuracy for "rollouts to target" (None: on each seed, the
            baseline's final accuracy on that seed).
        baseline: label of the arm the gaps are measured against (default: ``uniform`` if run).
        real_options: extra keys passed to ``run_training`` (real backend only).
        grid: the sweep's structure when this comparison is a tuning sweep (`expand_grid`).
    """

    strategies: tuple[StrategySpec, ...]
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 200
    prompts_per_step: int = 64
    rollouts_per_prompt: float = 16.0
    budget_multiplier: float = 1.0
    backend: str = "simulated"
    sim: SimConfig = field(default_factory=SimConfig)
    workers: int = 1
    target_accuracy: float | None = None
    baseline: str | None = None
    real_options: dict[str, Any] = field(default_factory=dict)
    grid: Grid | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.steps < 1 or self.prompts_per_step < 1 or not self.seeds:
            raise ValueError("need steps >= 1, prompts_per_step >= 1 and at least one seed")
        if self.rollouts_per_prompt <= 0 or self.budget_multiplier <= 0:
            raise ValueError("rollouts_per_prompt and budget_multiplier must be > 0")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {list(self.seeds)}")
        for spec in self.strategies:
            lo = spec.overrides.get("min_budget", AllocatorConfig.min_budget)
            hi = spec.overrides.get("max_budget", AllocatorConfig.max_budget)
            per_prompt = self.rollouts_per_prompt * self.budget_multiplier * spec.budget_multiplier
            if not lo <= per_prompt <= hi:
                raise ValueError(
                    f"{spec.label}: {per_prompt:g} rollouts per prompt on average is outside "
                    f"[min_budget, max_budget] = [{lo}, {hi}]; change --rollouts-per-prompt or --budget-multiplier"
                )
        if self.baseline is not None and self.baseline not in [s.label for s in self.strategies]:
            raise ValueError(f"baseline {self.baseline!r} is not one of the strategies run")

    @property
    def baseline_label(self) -> str:
        labels = [s.label for s in self.strategies]
        return self.baseline or ("uniform" if "uniform" in labels else labels[0])

    def sim_options(self) -> SimOptions:
        return SimOptions(
            steps=self.steps,
            prompts_per_step=self.prompts_per_step,
            rollouts_per_prompt=self.rollouts_per_prompt,
            budget_multiplier=self.budget_multiplier,
            sim=self.sim,
        )


@dataclass(frozen=True)
class RunResult:
    """One (strategy, seed) run: ``rows`` of per-step metrics and the final ``summary``."""

    label: str
    seed: int
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


# --- backends ------------------------------------------------------------------------------------


def simulated_backend(spec: StrategySpec, seed: int, options: CompareOptions) -> RunResult:
    rows, summary = simulate(
        spec.allocator_config(options.steps), seed, options.sim_options(), budget_multiplier=spec.budget_multiplier
    )
    return RunResult(spec.label, seed, rows, summary)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (e.g. the trainer or its extras are missing)."""


def real_run_options(spec: StrategySpec, seed: int, options: CompareOptions) -> dict[str, Any]:
    """The ``cobarl train`` options of one real run, flat as on its command line (the strategy's
    overrides are AllocatorConfig fields, i.e. ``cobarl train`` flags)."""
    if not isinstance(spec.strategy, str):
        raise BackendUnavailable("the real backend takes strategy names, not callables")
    return {
        "allocator": spec.strategy,
        **spec.overrides,
        "seed": seed,
        "max_steps": options.steps,
        "prompts_per_step": options.prompts_per_step,
        "rollouts_per_prompt": options.rollouts_per_prompt * options.budget_multiplier * spec.budget_multiplier,
        "progress": False,
        "transitions": True,  # the report's transition matrix; ~7 s per run on the embedded task
        # accuracy against rollouts at six points, so 'rollouts to target' is resolved (~3 s each here)
        "eval_every": max(1, options.steps // 6),
        **options.real_options,
    }


def effective_allocator(spec: StrategySpec, options: CompareOptions) -> AllocatorConfig:
    """The allocator settings an arm runs with on ``options.backend``, every default filled in: on
    the real back-end those of ``cobarl train`` (whose defaults may differ from `AllocatorConfig`'s,
    e.g. a max budget fitted to its task), on the simulator the spec's own."""
    if options.backend == "real":
        from cobarl.train.config import make_config

        return make_config(real_run_options(spec, options.seeds[0], options)).allocator_config().resolved()
    return spec.allocator_config(options.steps).resolved()


def allocator_settings(config: AllocatorConfig) -> dict[str, Any]:
    """JSON-ready fields of an allocator config (a callable strategy or rule by its name)."""
    return {f.name: v if v is None or isinstance(v, (bool, int, float, str)) else getattr(v, "__name__", str(v))
            for f in fields(config) for v in [getattr(config, f.name)]}


def check_real_runs(options: CompareOptions) -> None:
    """Build every run's `TrainConfig` with ``cobarl train``'s own validation before starting any run."""
    from cobarl.train.config import make_config

    for spec in options.strategies:
        for seed in options.seeds:
            try:
                make_config(real_run_options(spec, seed, options))
            except ValueError as e:
                raise ValueError(f"strategy {spec.label!r}, seed {seed}: {e}") from None


def real_backend(spec: StrategySpec, seed: int, options: CompareOptions) -> RunResult:
    """One ``cobarl train`` run via ``cobarl.experiments.real.run_training(options) -> dict``.

    The options (`real_run_options`) go through the same `cobarl.train.config.make_config` as the
    ``cobarl train`` command line; the result holds ``rows``: one dict per step with ``step`` and
    the simulator's metric names (``rollout/effective_ratio``, ``capability/alpha``, ``eval/...``),
    and ``summary``.
    """
    run_training = real_backend_function()
    out = run_training(real_run_options(spec, seed, options))
    rows = list(out.get("rows") or out.get("metrics") or [])
    rollouts = 0.0
    for k, row in enumerate(rows):
        row.setdefault("step", k + 1)
        if "rollouts" not in row and M.BUDGET_TOTAL in row:
            rollouts += float(row[M.BUDGET_TOTAL])
            row["rollouts"] = rollouts
    return RunResult(spec.label, seed, rows, dict(out.get("summary") or {}))


def real_backend_function() -> Callable[[dict], dict]:
    """`cobarl.experiments.real.run_training`, once the trainer it drives is known to import."""
    try:
        from cobarl.train.run import run  # noqa: F401 -- the trainer and the `train` extras
    except ImportError as err:
        raise BackendUnavailable(
            "the real backend runs cobarl train, which needs the `train` extras (pip install 'cobarl[train]'); "
            f"it could not be imported: {err}"
        ) from None
    from cobarl.experiments import real

    return real.run_training


BACKENDS: dict[str, Callable[[StrategySpec, int, CompareOptions], RunResult]] = {
    "simulated": simulated_backend,
    "real": real_backend,
}


def _run_one(backend: str, spec: StrategySpec, seed: int, options: CompareOptions) -> RunResult:
    return BACKENDS[backend](spec, seed, options)


class CompareInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_compare`; ``runs`` holds the runs that had finished, in job order."""

    def __init__(self, runs: list[RunResult], *, terminated: bool = False) -> None:
        super().__init__()
        self.runs, self.terminated = runs, terminated


def run_compare(options: CompareOptions, *, progress: bool = True) -> list[RunResult]:
    """Every strategy x seed, in parallel over ``options.workers`` processes.

    Results come back sorted by (strategy order, seed) whatever the completion order, so the
    output files do not depend on scheduling. Ctrl-C stops the runs at once and raises
    `CompareInterrupted` with the finished ones.
    """
    if options.backend == "real":
        real_backend_function()  # fail before starting anything
        check_real_runs(options)
    jobs = [(spec, seed) for spec in options.strategies for seed in options.seeds]
    bar = _progress(len(jobs), progress)
    results: dict[tuple[str, int], RunResult] = {}
    workers = max(1, min(options.workers, len(jobs)))
    try:
        if workers == 1:
            for spec, seed in jobs:
                results[(spec.label, seed)] = _run_one(options.backend, spec, seed, options)
                bar.update(1)
        else:
            _run_parallel(jobs, options, workers, results, bar)
    except KeyboardInterrupt as stop:
        raise CompareInterrupted([results[(s.label, seed)] for s, seed in jobs if (s.label, seed) in results],
                                 terminated=isinstance(stop, Terminated)) from None
    finally:
        bar.close()
    return [results[(spec.label, seed)] for spec, seed in jobs]


def _run_parallel(jobs: list, options: CompareOptions, workers: int, results: dict, bar) -> None:
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint)
    try:
        futures = {pool.submit(_run_one, options.backend, spec, seed, options): (spec.label, seed) for spec, seed in jobs}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            bar.set_postfix_str(f"{futures[fut][0]} seed {futures[fut][1]}")
            bar.update(1)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()


def _ignore_sigint() -> None:
    # A terminal's Ctrl-C reaches the whole process group; the parent alone decides what to keep.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker whose parent died (SIGKILL, a crash) must not live on re-parented: Linux ends it with its parent.
    _die_with_parent()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel sends SIGTERM to this process when its parent dies (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm preemption, ``kill``), handled as Ctrl-C: finished work is kept."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread, so the
    Ctrl-C path runs: workers are ended, finished results kept, and the exit status says so."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued runs and end the running ones now: ``shutdown`` alone lets running runs
    finish, and leaving its ``with`` block waits for every queued one (Python < 3.14 has no
    ``terminate_workers``)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    # The pool's manager thread may still register a worker after the first look: look again.
    processes += [p for p in (getattr(pool, "_processes", None) or {}).values() if p not in processes]
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(10)
        if process.is_alive():  # a worker slow to die on a loaded machine: no orphan either way
            process.kill()
            process.join()


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional; run silently without it
        return _NoBar()
    return tqdm(total=total, desc="compare", unit="run", dynamic_ncols=True)
