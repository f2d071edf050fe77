"""The run folder of `cobarl train`: where a run goes, what may already be there, and whether a
``--resume`` may continue it (saved config, process count, allocator state, step).

A new run goes only into a folder that does not exist or is empty; one that holds a run is never
appended to: ``--resume`` continues it, ``--fresh`` moves it aside."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cobarl.allocator import STATE_FORMAT as ALLOCATOR_STATE_FORMAT
from cobarl.io import LOCK_FILE, load_state
from cobarl.train.checkpoints import checkpoint_step, find_checkpoint, last_complete_checkpoint, move_damaged_aside
from cobarl.train.config import TrainConfig, make_config
from cobarl.train.config_files import config_diff, load_yaml
from cobarl.train.fingerprint import DATA_FILE, data_changes
from cobarl.train.metrics_log import METRICS_FILE

CONFIG_FILE = "config.yaml"
TRANSITIONS_BEFORE_FILE = "train_buckets_before.json"
RUNS_ROOT = Path("runs")


def process_rank() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (torchrun, accelerate launch); (0, 1) otherwise.

    Read before torch.distributed is set up, so every process can check options before any work."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def resolve_run_dir(config: TrainConfig) -> Path:
    if config.output_dir is not None:
        return Path(config.output_dir).expanduser()
    if config.resume:
        runs = sorted(RUNS_ROOT.glob("train-*"), key=lambda p: p.stat().st_mtime) if RUNS_ROOT.is_dir() else []
        if not runs:
            raise FileNotFoundError(f"--resume: no run under {RUNS_ROOT}/; pass --output-dir RUN_DIR")
        return runs[-1]
    return RUNS_ROOT / time.strftime("train-%Y%m%d-%H%M%S")


def saved_config(values: dict[str, Any]) -> TrainConfig | None:
    """The ``config.yaml`` of the run that ``values`` (with ``resume``) points at, or None if it has none."""
    probe = TrainConfig(**{k: v for k, v in values.items() if k in ("output_dir", "resume")})
    run_dir = resolve_run_dir(probe)
    if not holds_run(run_dir):
        return None  # refused by prepare_run_dir, naming the folder
    return read_saved_config(run_dir)


def read_saved_config(run_dir: Path) -> TrainConfig:
    """The run's ``config.yaml``; missing or unreadable is an error: resuming on defaults would silently
    run another configuration (other sizes, other budgets) under the same summary."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume: {path} is missing, so the options this run was started with are unknown and resuming "
            "would use defaults. Restore config.yaml (a copy is not kept elsewhere), or start over with --fresh")
    try:
        return load_run_config(path)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--resume: {path} cannot be read ({e}); restore it, or start over with --fresh") from None


def load_run_config(path: Path) -> TrainConfig:
    """A run's saved ``config.yaml``. One written before the ``task`` option existed ran the embedded task
    of that time, arith-v3: reading it as today's default would resume the run on another task."""
    values = load_yaml(path)
    if "task" not in values and values.get("dataset") is None:
        values["task"] = "arith-v3"
    return make_config(values)


RUN_FILES = (CONFIG_FILE, DATA_FILE, METRICS_FILE, "summary.json", "eval_before.json", TRANSITIONS_BEFORE_FILE)


def holds_run(run_dir: Path) -> bool:
    names = (CONFIG_FILE, METRICS_FILE, "summary.json")
    return run_dir.is_dir() and (any((run_dir / n).exists() for n in names) or any(run_dir.glob("checkpoint-*")))


def foreign_files(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` that a cobarl run did not write (a new run never goes among them)."""
    if not run_dir.is_dir():
        return []
    ours = set(RUN_FILES) | {LOCK_FILE, "runs"}  # runs/: tensorboard's logs (--report-to tensorboard)
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name not in ours and not p.name.startswith(("checkpoint-", "damaged-ckpt-", "."))
                  and not p.name.endswith(".tmp"))


def move_aside(run_dir: Path) -> Path:
    n = 1
    while run_dir.with_name(f"{run_dir.name}.old-{n}").exists():
        n += 1
    target = run_dir.with_name(f"{run_dir.name}.old-{n}")
    os.replace(run_dir, target)
    return target


def check_resume_config(config: TrainConfig, run_dir: Path) -> None:
    """Refuse a resume whose run-defining options differ from the run's saved config (unless allowed)."""
    saved = read_saved_config(run_dir)
    if config.allow_config_change:
        return
    diff = config_diff(saved, config)
    if diff:
        raise ValueError(
            f"--resume would change run-defining options of {run_dir} (saved -> now):\n  " + "\n  ".join(diff)
            + "\nDrop these options to continue the run as it was, or pass --allow-config-change to accept "
            "(the result then differs from an uninterrupted run)."
        )


def check_resume_world(checkpoint: Path, world: int, allow: bool) -> None:
    saved = json.loads((checkpoint / "cobarl_state.json").read_text()).get("world_size", 1)
    if saved != world and not allow:
        raise ValueError(
            f"{checkpoint} was written by {saved} process(es) and this launch has {world}: the per-process "
            "random states and batch split differ, so the run would not continue as it was. Launch with "
            f"{saved} process(es), or pass --allow-config-change to accept"
        )


def check_resume_step(checkpoint: Path, max_steps: int) -> None:
    """Refuse to resume from a checkpoint that already reached ``max_steps``: the trainer's loop would
    run one more step past it (measured: 12 -> 13) instead of stopping."""
    if checkpoint_step(checkpoint) >= max_steps:
        finished = (checkpoint.parent / "summary.json").is_file()
        raise ValueError(
            f"--resume: {checkpoint.name} already reached --max-steps {max_steps}, so training is complete ("
            + ("the run finished: its summary.json is there" if finished else "the run was stopped before its final evaluation")
            + f"); raise --max-steps to train further, or evaluate {checkpoint} with cobarl eval"
        )


def prepare_run_dir(config: TrainConfig, run_dir: Path, *, is_main: bool, world: int, log: Callable[[str], None],
                    data: dict | None = None, train_prompts: int | None = None) -> Path | None:
    """Decide what happens to ``run_dir``; returns the checkpoint to resume from (None: start at step 0).

    ``data``: the run's `data_fingerprint`, checked against the saved one on resume; ``train_prompts``: the
    number of train prompts, to check the saved rollout policy state as the trainer will load it (None: not
    checked, e.g. for an allocator the caller passes itself). Only the main process changes files (sets
    damaged checkpoints or an old run aside), and only once every check has passed."""
    if config.resume:
        return _prepare_resume(config, run_dir, is_main=is_main, world=world, log=log, data=data,
                               train_prompts=train_prompts)
    # Only the main process judges the directory: the others may look after it has written config.yaml.
    # When it refuses, the launcher (torchrun, accelerate) stops the other processes.
    if is_main and holds_run(run_dir):
        if not config.fresh:
            raise FileExistsError(
                f"{run_dir} already holds a run; continue it with --resume, start over with --fresh "
                "(moves the old run aside), or pick another --output-dir"
            )
        check_not_inside(run_dir)
        log(f"cobarl train: moved the previous run aside to {move_aside(run_dir)}")
    elif is_main and foreign_files(run_dir):
        names = foreign_files(run_dir)
        raise FileExistsError(
            f"{run_dir} already holds files that are not a cobarl run ({', '.join(names[:5])}"
            + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            + "); a run writes config.yaml, metrics.jsonl and checkpoints into its folder and would mix with them. "
            "Pass an --output-dir that does not exist yet or is empty")
    return None


def _prepare_resume(config: TrainConfig, run_dir: Path, *, is_main: bool, world: int, log: Callable[[str], None],
                    data: dict | None, train_prompts: int | None) -> Path | None:
    """Every check a resume makes, then (main process) its changes to the folder: a refused resume leaves it
    byte-identical."""
    if not holds_run(run_dir):
        raise FileNotFoundError(f"--resume: {run_dir} holds no run (no {CONFIG_FILE}, no checkpoint)")
    check_resume_config(config, run_dir)
    checkpoint, damaged = find_checkpoint(run_dir, log=log)
    if checkpoint is None:
        log(f"cobarl train: {run_dir} has no complete checkpoint yet; starting it over from step 0 with its saved config")
    else:
        check_resume_world(checkpoint, world, config.allow_config_change)
        check_resume_state(checkpoint, config)
        # A checkpoint at exactly --max-steps without a summary was interrupted in its final evaluation:
        # run() finishes it (evaluates and summarises). Anything past it, or already summarised, is refused.
        if (run_dir / "summary.json").is_file() or config.lora_r or checkpoint_step(checkpoint) > config.max_steps:
            check_resume_step(checkpoint, config.max_steps)
            check_resume_generated(checkpoint, config.max_generated)
        if train_prompts is not None:
            check_resume_policy(checkpoint, config, train_prompts)
    changed = check_resume_data(config, run_dir, data, log)
    if is_main:
        move_damaged_aside(damaged, log=log)
        _forget_old_measures(run_dir, changed, log)
    return checkpoint


def _forget_old_measures(run_dir: Path, changed: dict, log: Callable[[str], None]) -> None:
    """Remove what was measured on prompts the accepted data change replaced; the resumed run measures it again."""
    for split, name in (("held-out", "eval_before.json"), ("train", TRANSITIONS_BEFORE_FILE)):
        if split in changed and (run_dir / name).is_file():
            (run_dir / name).unlink()
            log(f"cobarl train: {name} was measured on the old {split} prompts; it is measured again on the new {split} prompts")


def check_resume_generated(checkpoint: Path, max_generated: int | None) -> None:
    """Refuse to resume a summarised run that stopped at ``--max-generated``, as one that reached --max-steps."""
    generated = int(load_state(checkpoint).get("generated", 0))
    if max_generated is None or generated < max_generated:
        return
    finished = " (the run finished: its summary.json is there)" if (checkpoint.parent / "summary.json").is_file() else ""
    raise ValueError(
        f"--resume: {checkpoint.name} already reached --max-generated {max_generated} ({generated} rollouts generated), "
        f"so training is complete{finished}; raise --max-generated with --allow-config-change to train further (it also "
        f"sets the learning-rate schedule, so the result differs from one longer run), or evaluate {checkpoint} with cobarl eval")


def check_resume_policy(checkpoint: Path, config: TrainConfig, train_prompts: int) -> None:
    """Load the checkpoint's allocator / rollout policy state into a policy built from ``config``, as the trainer
    will after the model loads: a state it refuses (another strategy or option, another data size) is refused now."""
    from cobarl.policies import PromptStream, make_policy

    policy = make_policy(config.strategy_config())
    if policy.selects_prompts:
        policy.stream = PromptStream(range(train_prompts), seed=config.seed)
    try:
        policy.load_state_dict(load_state(checkpoint)["allocator"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"--resume: the strategy's state of {checkpoint} cannot be continued with these options ({e}). Drop the "
            "changed options to continue the run as it was, or start a new run (--fresh, or another --output-dir)"
        ) from None


def check_resume_data(config: TrainConfig, run_dir: Path, data: dict | None, log: Callable[[str], None]) -> dict:
    """Compare the data with the fingerprint saved with the run: changed data is refused (what changed, in
    words) unless --allow-config-change accepts it; returns split name -> changes (empty: unchanged)."""
    path = run_dir / DATA_FILE
    if data is None:
        return {}
    if not path.is_file():
        log(f"WARNING: {run_dir} records no fingerprint of its data (written before cobarl kept one), so --resume "
            "cannot check that its prompts and answers are the ones it started with")
        return {}
    try:
        changes = data_changes(json.loads(path.read_text()), data)
    except (ValueError, AttributeError, TypeError, KeyError) as e:
        raise ValueError(f"--resume: {path} cannot be read ({e}); restore it, or start over with --fresh") from None
    if not changes:
        return {}
    text = "; ".join(f"{split}: {', '.join(words)}" for split, words in changes.items())
    if not config.allow_config_change:
        raise ValueError(
            f"--resume: the data of {run_dir} changed since the run started ({text}): the held-out set, the before-RL "
            "accuracy and per-prompt statistics would belong to other prompts. Restore the data, start over with "
            "--fresh, or pass --allow-config-change to accept (the result then differs from an uninterrupted run)")
    log(f"WARNING: --allow-config-change: resuming on changed data ({text}); the result differs from an uninterrupted run")
    return changes


def check_not_inside(run_dir: Path) -> None:
    """Refuse to move aside the folder the process is in (or one holding it): the shell and every relative path
    would stay inside the moved run."""
    target, here = Path(os.path.abspath(run_dir)), Path.cwd()
    if target == here or target in here.parents:
        raise FileExistsError(
            f"--fresh would move {target} aside, and it is the folder you are in{'' if target == here else ' (or holds it)'}: "
            f"your shell and relative paths would stay in the moved run. Run it from outside, e.g. cd .. && "
            f"cobarl train --fresh --output-dir {target.name}")


def check_resume_state(checkpoint: Path, config: TrainConfig) -> None:
    """Refuse an allocator state whose count of observed generations does not match the checkpoint's step
    (a wiped or replaced ``cobarl_state.json`` would resume with statistics of another run, or none)."""
    state = json.loads((checkpoint / "cobarl_state.json").read_text())
    step = checkpoint_step(checkpoint)
    if (state.get("allocator") or {}).get("format") != ALLOCATOR_STATE_FORMAT:
        # A rollout policy's state (Reinforce-Ada, DAPO, ...) counts no generations; its own load refuses
        # another format or configuration, so only the step is checked here.
        if state.get("global_step", step) != step:
            raise ValueError(f"--resume: {checkpoint}/cobarl_state.json was written at step {state.get('global_step')!r}, "
                             f"not {step}: it was damaged or replaced. Move this checkpoint aside to resume from an "
                             "earlier one, or start over with --fresh")
        return
    expected = -(-step // config.num_iterations)
    tracker = (state.get("allocator") or {}).get("tracker") or {}
    stats = (state.get("allocator") or {}).get("stats") or {}
    seen = tracker.get("step")
    # A generation with no scorable rollout is not observed, so fewer than `expected` is possible; more is not,
    # and observed generations (or any generation at all) with no prompt history means the state was wiped.
    wiped = not stats.get("history") and (bool(seen) or bool(expected))
    if state.get("global_step", step) != step or not isinstance(seen, int) or seen > expected or wiped:
        raise ValueError(
            f"--resume: {checkpoint}/cobarl_state.json does not match its checkpoint (step {step}, so at most {expected} "
            f"observed generation(s); the state records {seen!r} and {len(stats.get('history') or [])} prompt histories): "
            "it was damaged or replaced. Move this checkpoint aside to resume from an earlier one, or start over with --fresh")


def interrupt_hint(run_dir: Path) -> str:
    """What to run after an interrupt, given what is on disk."""
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint is not None:
        return f"Continue from {checkpoint.name} with: cobarl train --resume --output-dir {run_dir}"
    if (run_dir / CONFIG_FILE).is_file():
        return (f"No checkpoint was written yet. Start the run over (same options) with: "
                f"cobarl train --resume --output-dir {run_dir}")
    return "Nothing was written yet; run the same command again."
