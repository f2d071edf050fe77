"""The back-ends of ``cobarl compare``: functions ``(spec, seed, options) -> RunResult``, one
training run each.

* ``simulated``: :mod:`cobarl.experiments.simulation.simulator` (no LLM; many seeds in seconds);
* ``real``: ``cobarl.experiments.comparison.real.run_training(config) -> dict`` (the ``cobarl train`` trainer).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cobarl import __version__
from cobarl import metrics as M
from cobarl.policies import StrategyConfig
from cobarl.experiments.comparison.runs import BACKEND_NAMES, CompareOptions, RunResult, run_name
from cobarl.experiments.simulation.simulator import simulate
from cobarl.experiments.comparison.specs import StrategySpec

def simulated_backend(spec: StrategySpec, seed: int, options: CompareOptions) -> RunResult:
    rows, summary = simulate(
        spec.strategy_config(options.steps), seed, options.sim_options(), budget_multiplier=spec.budget_multiplier,
        max_generated=options.max_generated(spec), draw_width=spec.draw_width,
    )
    return RunResult(spec.label, seed, rows, summary)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (e.g. the trainer or its extras are missing)."""


def real_run_options(spec: StrategySpec, seed: int, options: CompareOptions) -> dict[str, Any]:
    """The ``cobarl train`` options of one real run, flat as on its command line (the strategy's
    options are ``cobarl train`` flags)."""
    if not isinstance(spec.strategy, str):
        raise BackendUnavailable("the real backend takes strategy names, not callables")
    return {
        "strategy": spec.strategy,
        **spec.overrides,
        "seed": seed,
        "max_steps": options.steps,
        **({"max_generated": options.max_generated(spec)} if options.max_generated(spec) is not None else {}),
        "prompts_per_step": options.prompts_per_step,
        "rollouts_per_prompt": options.rollouts_per_prompt * options.budget_multiplier * spec.budget_multiplier,
        "progress": False,
        "transitions": True,  # the report's transition matrix; ~7 s per run on the embedded task
        # accuracy against rollouts at six points, so 'rollouts to target' is resolved (~3 s each here)
        "eval_every": max(1, options.steps // 6),
        **({"output_dir": str(real_run_dir(spec, seed, options))} if options.run_root else {}),
        **options.real_options,
    }


def real_run_dir(spec: StrategySpec, seed: int, options: CompareOptions) -> Path:
    """Where one real run's ``cobarl train`` folder goes: ``<run_root>/<label>-seed<seed>`` (named as its
    stored result)."""
    return Path(options.run_root) / run_name(spec.label, seed)


def effective_strategy(spec: StrategySpec, options: CompareOptions) -> StrategyConfig:
    """The strategy settings an arm runs with on ``options.backend``: on the real back-end as
    ``cobarl train`` resolves them (`make_config`: the strategy's options plus the task's preset, e.g.
    the embedded task's max budget 32 for an allocator, unless the spec sets it), on the simulator the
    spec's own."""
    if options.backend == "real":
        from cobarl.train.config import make_config

        return make_config(real_run_options(spec, options.seeds[0], options)).strategy_config()
    return spec.strategy_config(options.steps)


def check_real_runs(options: CompareOptions) -> None:
    """Build every run's `TrainConfig` with ``cobarl train``'s own validation before starting any run."""
    from cobarl.train.config import make_config

    for spec in options.strategies:
        for seed in options.seeds:
            try:
                make_config(real_run_options(spec, seed, options))
            except ValueError as e:
                raise ValueError(f"strategy {spec.label!r}, seed {seed}: {e}") from None


# cobarl train options that change where a run writes or what it prints, never its result.
_NOT_RESULT = ("output_dir", "progress")


def run_settings(spec: StrategySpec, seed: int, options: CompareOptions) -> dict[str, Any]:
    """What determines one run's result, flat and JSON-ready (as it reads back from a file): the
    resolved allocator settings and, on the real back-end, the whole `TrainConfig` ``cobarl train``
    builds from them, so a default filled in differently or a changed ``--train-args`` shows. The run
    store (`cobarl.experiments.comparison.run_store`) reuses a finished run only under equal settings. The keys
    a user sets by a compare flag come first, so a difference is named by the flag that made it."""
    head = {"backend": options.backend, "seed": seed, "budget": options.budget, "steps": options.steps,
            "prompts_per_step": options.prompts_per_step, "rollouts_per_prompt": options.rollouts_per_prompt,
            "budget_multiplier": options.budget_multiplier, "arm_budget_multiplier": spec.budget_multiplier,
            "max_generated": options.max_generated(spec), "cobarl_version": __version__}
    if options.backend == "real":
        from cobarl.train.config import make_config

        config = make_config(real_run_options(spec, seed, options))
        train = {k: v for k, v in config.to_dict().items() if k not in ("strategy", *_NOT_RESULT)}
        body = {**_flat("strategy", config.strategy_config().to_dict()), **_flat("train", train)}
    else:
        body = {**_flat("strategy", spec.strategy_config(options.steps).to_dict()),
                **({"draw_width": spec.draw_width} if spec.draw_width is not None else {}),
                **_flat("simulator", asdict(options.sim))}
    return json.loads(json.dumps({**head, **body}))  # tuples as lists, as a stored run's read back


def upgrade_settings(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored run's settings as today's :func:`run_settings` writes them: a run stored before a policy
    owned its options recorded every policy's under ``allocator.*``; they become the ``strategy.*``
    its strategy has (the others did nothing). Such a policy's simulated rewards were drawn from a
    matrix as wide as its recorded max budget: that is its ``draw_width`` now."""
    old = {k[len("allocator."):]: v for k, v in stored.items() if k.startswith("allocator.")}
    if not old:
        return stored
    config = StrategyConfig.from_dict(old)
    out = {k: v for k, v in stored.items() if not k.startswith("allocator.")}
    out.update(_flat("strategy", config.to_dict()))
    if stored.get("backend") == "simulated" and not hasattr(config.options, "max_budget") and old.get("max_budget", 128) != 128:
        out["draw_width"] = old["max_budget"]
    return json.loads(json.dumps(out))


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(_flat(f"{prefix}.{key}", value) if isinstance(value, dict) else {f"{prefix}.{key}": value})
    return out


def real_backend(spec: StrategySpec, seed: int, options: CompareOptions) -> RunResult:
    """One ``cobarl train`` run via ``cobarl.experiments.comparison.real.run_training(options) -> dict``.

    The options (`real_run_options`) go through the same `cobarl.train.config.make_config` as the
    ``cobarl train`` command line; the result holds ``rows``: one dict per step with ``step`` and
    the simulator's metric names (``rollout/effective_ratio``, ``capability/alpha``, ``eval/...``),
    and ``summary``.
    """
    run_training = real_backend_function()
    if options.run_root and real_run_dir(spec, seed, options).exists():
        # the comparison's own unfinished run (a finished one is in its run store and never runs again)
        shutil.rmtree(real_run_dir(spec, seed, options))
    out = run_training(real_run_options(spec, seed, options))
    rows = list(out.get("rows") or out.get("metrics") or [])
    # cumulative rollouts GENERATED (rollout/count); logs from before that metric: the planned budget/total
    # (a step that generated nothing, e.g. a later PPO iteration, carries the running total)
    count = M.ROLLOUT_COUNT if any(M.ROLLOUT_COUNT in row for row in rows) else M.BUDGET_TOTAL
    counted = any(count in row for row in rows)
    rollouts = 0.0
    for k, row in enumerate(rows):
        row.setdefault("step", k + 1)
        if "rollouts" not in row and counted:
            rollouts += float(row.get(count) or 0.0)
            row["rollouts"] = rollouts
    return RunResult(spec.label, seed, rows, dict(out.get("summary") or {}))


def real_backend_function() -> Callable[[dict], dict]:
    """`cobarl.experiments.comparison.real.run_training`, once the trainer it drives is known to import."""
    try:
        from cobarl.train.run import run  # noqa: F401 -- the trainer and the `train` extras
    except ImportError as err:
        raise BackendUnavailable(
            "the real backend runs cobarl train, which needs the `train` extras (pip install 'cobarl[train]'); "
            f"it could not be imported: {err}"
        ) from None
    from cobarl.experiments.comparison import real

    return real.run_training


BACKENDS: dict[str, Callable[[StrategySpec, int, CompareOptions], RunResult]] = {
    "simulated": simulated_backend,
    "real": real_backend,
}
assert tuple(BACKENDS) == BACKEND_NAMES


def run_one(backend: str, spec: StrategySpec, seed: int, options: CompareOptions) -> RunResult:
    return BACKENDS[backend](spec, seed, options)
