"""Build everything for `cobarl train`, run it, and summarise.

``run(config)`` is the whole pipeline; the CLI only parses arguments into a `TrainConfig`::

    model, data   <- embedded task (--task) and its tiny model, or --model / --dataset
    accuracy      <- held-out accuracy of the starting model
    trainer       <- AdaptiveGRPOTrainer(reward = registry[--reward]) + metrics/progress callbacks
    train         <- TRL loop; checkpoint-N/ (with cobarl_state.json) every --save-steps
    accuracy      <- held-out accuracy after RL; summary.json

Run directory: ``config.yaml``, ``metrics.jsonl`` (one JSON object per step, appended, flushed and
fsynced), ``checkpoint-N/``, ``eval_before.json`` (and ``train_buckets_before.json`` with ``--transitions``),
``summary.json``. A new run goes only into a folder that does not exist or is empty; one that holds a
run is never appended to: ``--resume`` continues it, ``--fresh`` moves it aside; ``.cobarl.lock`` keeps a
second process out while a run writes (docs/reliability.md lists every such promise). With several
processes (torchrun, accelerate launch) only the main process writes these files, evaluates and
prints; every process validates the same options before any model is loaded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.io import LOCK_FILE, FolderLock, write_json, write_text
from cobarl.rewards import GuardedReward, load_reward
from cobarl.stats import difficulty_buckets, success_rule, transition_counts
from cobarl.train.checkpoints import last_complete_checkpoint, select_checkpoint
from cobarl.train.config import TrainConfig, batch_layout, config_diff, dump_yaml, load_yaml, make_config
from cobarl.train.data import embedded_datasets, load_dataset_file, split_held_out
from cobarl.models.load import load_policy, resolve_model_path

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
TRANSITIONS_BEFORE_FILE = "train_buckets_before.json"
RUNS_ROOT = Path("runs")

# --- rewards: a name or a callable(completion, answer) -> float -----------------------------------


def completion_text(completion: Any) -> str:
    """TRL passes a string, or a chat list whose last message is the assistant's."""
    return completion if isinstance(completion, str) else str(completion[-1]["content"])


class BatchReward:
    """TRL's reward signature ``f(prompts, completions, answer, **kw) -> list[float]`` over a guarded
    ``verifier(completion, answer)``, scored by ``workers`` threads so one slow call does not serialise
    the batch. ``failure_count`` (calls that raised, timed out or returned NaN) is read by the trainer.
    """

    def __init__(self, verifier: Callable[[str, str], float], name: str = "correct", workers: int = 1):
        self.verifier = verifier if isinstance(verifier, GuardedReward) else GuardedReward(verifier, timeout=None)
        self.workers = workers
        self.__name__ = name

    @property
    def failure_count(self) -> int:
        return self.verifier.failure_count

    @property
    def last_failure(self) -> str:
        return self.verifier.last_failure

    def __call__(self, prompts, completions, answer, **_: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        if len(texts) != len(answer):
            raise ValueError(f"{len(texts)} completions but {len(answer)} answers")
        if self.workers == 1 or len(texts) < 2:
            return [self.verifier(t, a) for t, a in zip(texts, answer)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(self.workers, len(texts)), thread_name_prefix="cobarl-score") as pool:
            return list(pool.map(self.verifier, texts, answer))


def make_reward_func(verifier: Callable[[str, str], float], name: str = "correct", workers: int = 1) -> BatchReward:
    """Adapt ``verifier(completion, answer)`` to TRL's ``f(prompts, completions, answer, ...) -> list``."""
    return BatchReward(verifier, name, workers)


# --- model ---------------------------------------------------------------------------------------


# --- evaluation ----------------------------------------------------------------------------------


EVAL_CHECK_AFTER = 16
"""Scored calls after which an evaluation stops early when its verifier fails at the failure limit."""


def _failure_count(verifier) -> int:
    return int(getattr(verifier, "failure_count", 0))


def sample_scores(model, tokenizer, dataset, verifier, *, max_new_tokens: int, batch_size: int = 128,
                  temperature: float = 0.0, num_samples: int = 1, seed: int = 0,
                  failure_limit: float = 1.0) -> np.ndarray:
    """``[prompts, num_samples]`` verifier scores of fresh samples (greedy when ``temperature == 0``).

    Generates through the project's one loop (`cobarl.models.generate.HFGenerator`), with prompts
    rendered and tokenized as TRL renders them for training (chat template for chat prompts, no
    added special tokens), and T = ``temperature`` with no top-k / top-p cut, as the rollouts are.
    Stops with a RuntimeError once ``failure_limit`` (a share, as ``--reward-failure-limit``; 1: never)
    of the verifier's calls failed, checked from `EVAL_CHECK_AFTER` calls on, so a broken verifier
    does not cost a whole evaluation of timeouts.
    """
    from cobarl.models.generate import HFGenerator
    from cobarl.train.trainer import exceeds_failure_limit

    texts = [p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in dataset["prompt"]]
    generator = HFGenerator(model, tokenizer, batch_size=batch_size, add_special_tokens=False)
    samples = generator.generate(texts, n=num_samples, temperature=temperature, top_p=1.0,
                                 max_tokens=max_new_tokens, seed=seed)
    start, total, rows = _failure_count(verifier), len(texts) * num_samples, []
    for cs, a in zip(samples, dataset["answer"]):
        rows.append([float(verifier(c, a)) for c in cs])
        calls, failed = len(rows) * num_samples, _failure_count(verifier) - start
        if calls >= min(total, EVAL_CHECK_AFTER) and exceeds_failure_limit(failed, calls, failure_limit):
            detail = getattr(verifier, "last_failure", "")
            raise RuntimeError(
                f"evaluation stopped: the reward failed on {failed} of its first {calls} calls (>= reward_failure_limit "
                f"{failure_limit:g}), so the accuracy would be meaningless" + (f"; last failure: {detail}" if detail else "")
                + ". Fix the verifier (or raise --reward-timeout) and run again.")
    return np.array(rows, dtype=float).reshape(len(texts), num_samples)


def probe_verifier(verifier, answers: list, *, tries: int = 3) -> None:
    """Call the verifier on up to ``tries`` ground-truth answers (as their own completions) before any
    model loads: one that fails on all of them, or hangs past its timeout once, is refused now rather
    than after the before-RL evaluation has scored every held-out prompt as a failure."""
    if not isinstance(verifier, GuardedReward):
        return
    probe = GuardedReward(verifier.fn, name=verifier.name, timeout=verifier.timeout, bounded=verifier.timeout is None)
    for answer in list(answers)[:tries]:
        before = probe.failure_count
        probe(str(answer), answer)
        if probe.failure_count == before:
            return
        if "timeout" in probe.last_failure:
            break
    raise ValueError(f"reward {verifier.name!r} failed when probed with a ground-truth answer as the completion "
                     f"({probe.last_failure}); fix the verifier (or raise --reward-timeout) before training")


TRANSITION_SAMPLES = 16
"""Samples per train prompt for its difficulty bucket (CoBA-RL Fig. 7 uses avg@16)."""


def train_buckets(model, tokenizer, dataset, verifier, config: TrainConfig) -> list[int]:
    """Difficulty bucket (`cobarl.stats.BUCKETS`) of every train prompt: successes, under the run's
    success rule, among `TRANSITION_SAMPLES` samples at the training temperature."""
    scores = sample_scores(model, tokenizer, dataset, verifier, max_new_tokens=config.max_completion_length,
                           temperature=config.temperature, num_samples=TRANSITION_SAMPLES, seed=config.seed)
    success = success_rule(config.allocator_config().resolved().success)
    return difficulty_buckets(success(scores).sum(axis=1), TRANSITION_SAMPLES).tolist()


def held_out_accuracy(model, tokenizer, dataset, verifier, *, max_new_tokens: int, batch_size: int = 128,
                      temperature: float = 0.0, num_samples: int = 1, seed: int = 0,
                      failure_limit: float = 1.0) -> dict[str, float]:
    """Mean verifier score on ``dataset`` (greedy when ``temperature == 0``), overall and per difficulty."""
    scores = sample_scores(model, tokenizer, dataset, verifier, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           temperature=temperature, num_samples=num_samples, seed=seed,
                           failure_limit=failure_limit).mean(axis=1).tolist()
    result = {"accuracy": float(np.mean(scores)) if scores else 0.0}
    if "difficulty" in dataset.column_names:
        levels = dataset["difficulty"]
        for level in sorted(set(levels)):
            result[f"accuracy/level_{level}"] = float(np.mean([s for s, lv in zip(scores, levels) if lv == level]))
    return result


# --- callbacks -----------------------------------------------------------------------------------


def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


def _fsync_append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _parse_lines(text: str) -> list[dict]:
    """JSON objects of a metrics file; a torn line (a kill mid-write) is skipped, not the rest of the file."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the intact lines of steps up to ``last_step`` (later ones are redone on resume); atomic rewrite."""
    if not path.is_file():
        return
    keep = [row for row in _parse_lines(path.read_text()) if row.get("step", 0) <= last_step]
    write_text(path, "".join(json.dumps(row) + "\n" for row in keep))


def repair_metrics(path: Path, checkpoint: Path | None) -> None:
    """Make ``metrics.jsonl`` hold exactly the steps up to ``checkpoint`` (none without one), the later ones
    being redone on resume. A step whose line is torn or missing (a kill mid-write, a disk error) is
    restored from the checkpoint's own record of it (``trainer_state.json``'s ``log_history``); a step
    neither holds is refused with the fix, since the summary would under-count the run."""
    last = checkpoint_step(checkpoint) if checkpoint is not None else 0
    if not path.is_file() and last == 0:
        return
    rows = {row["step"]: row for row in read_metrics(path) if isinstance(row.get("step"), int) and 0 < row["step"] <= last}
    if checkpoint is not None:
        history = json.loads((checkpoint / "trainer_state.json").read_text()).get("log_history", [])
        for entry in history:
            step = entry.get("step")
            if isinstance(step, int) and 0 < step <= last and step not in rows and "loss" in entry:
                rows[step] = {"step": step, "time": None, **{k: v for k, v in entry.items() if k != "step"}}
    missing = sorted(set(range(1, last + 1)) - set(rows))
    if missing:
        raise ValueError(
            f"--resume: {path} has no intact line for step(s) {', '.join(map(str, missing[:10]))} and {checkpoint} "
            "has no record of them to restore, so the summary would under-count the run. Start it over with --fresh "
            "(the damaged run is moved aside), or resume from an earlier checkpoint by moving the later ones aside.")
    write_text(path, "".join(json.dumps(rows[step]) + "\n" for step in sorted(rows)))


def checkpoint_step(checkpoint: Path) -> int:
    return int(Path(checkpoint).name.split("-")[1])


def read_metrics(path: Path) -> list[dict]:
    return _parse_lines(path.read_text()) if path.is_file() else []


def make_callbacks(run_dir: Path, *, max_steps: int, progress: bool) -> list:
    base = _trainer_callback_base()

    class MetricsJsonl(base):
        """Append one JSON object per logged training step to metrics.jsonl (flushed + fsynced)."""

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs and "loss" in logs:
                row = {"step": state.global_step, "time": time.time()}
                row.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str)) or v is None})
                _fsync_append(run_dir / METRICS_FILE, json.dumps(row))

    class ProgressBar(base):
        """tqdm bar with live reward, effective ratio and alpha."""

        bar = None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=max_steps, initial=state.global_step, desc="cobarl train", unit="step",
                                dynamic_ncols=True, file=sys.stderr)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.update(state.global_step - self.bar.n)
                self.bar.set_postfix(
                    reward=f"{logs.get(M.REWARD_MEAN, float('nan')):.3f}",
                    eff=f"{logs.get(M.ROLLOUT_EFFECTIVE_RATIO, float('nan')):.2f}",
                    alpha=f"{logs.get(M.CAPABILITY_ALPHA, float('nan')):.2f}",
                    refresh=False,
                )

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return [MetricsJsonl()] + ([ProgressBar()] if progress else [])


# --- run -----------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    run_dir: str
    steps: int
    rollouts: int
    effective_ratio: float
    accuracy_before: dict[str, float]  # metric name (cobarl.metrics) -> value, before RL
    accuracy_after: dict[str, float]
    initial_heldout_accuracy: float  # eval/heldout_accuracy (sampled avg@8) before RL
    final_heldout_accuracy: float  # ... and after
    seconds: float
    seconds_per_step: float
    rollouts_per_second: float
    overhead_frac: float
    resumed_from: str | None = None
    processes: int = 1
    rollouts_per_step: int = 0
    allocations: int = 0
    reward_failures: int = 0
    reward_calls: int = 0
    # reward calls of the before/after (and --eval-every) evaluations that failed (scored 0) / were made
    eval_reward_failures: int = 0
    eval_reward_calls: int = 0
    # [5][5] train prompts by difficulty bucket before (row) and after (column) RL (--transitions)
    transitions: list[list[int]] | None = None

    def text(self) -> str:
        b, a, nan = self.accuracy_before, self.accuracy_after, float("nan")
        lines = [
            f"held-out accuracy (greedy): {b.get(M.EVAL_HELDOUT_GREEDY, nan):.3f} -> {a.get(M.EVAL_HELDOUT_GREEDY, nan):.3f}",
            f"held-out accuracy (sampled, T=1, avg@8): {self.initial_heldout_accuracy:.3f} -> {self.final_heldout_accuracy:.3f}",
        ]
        lines += [
            f"steps: {self.steps}   allocations: {self.allocations} x {self.rollouts_per_step} rollouts across "
            f"{self.processes} process(es)   rollouts spent: {self.rollouts}   mean effective ratio: {self.effective_ratio:.3f}",
            f"time: {self.seconds:.0f}s   {self.seconds_per_step:.2f} s/step   {self.rollouts_per_second:.0f} rollouts/s   "
            f"allocation overhead: {100 * self.overhead_frac:.2f}% of step time",
        ]
        if self.reward_failures:
            lines.append(f"WARNING: {self.reward_failures} of {self.reward_calls} reward calls failed (scored 0); "
                         "see reward/failures in metrics.jsonl")
        if self.eval_reward_failures:
            lines.append(f"WARNING: {self.eval_reward_failures} of {self.eval_reward_calls} reward calls of the held-out "
                         "evaluations failed (scored 0): the accuracies above are lower bounds")
        lines.append(f"run directory: {self.run_dir}")
        return "\n".join(lines)


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


RUN_FILES = (CONFIG_FILE, METRICS_FILE, "summary.json", "eval_before.json", TRANSITIONS_BEFORE_FILE)


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
    step = int(checkpoint.name.split("-")[1])
    if step >= max_steps:
        finished = (checkpoint.parent / "summary.json").is_file()
        raise ValueError(
            f"--resume: {checkpoint.name} already reached --max-steps {max_steps}, so training is complete ("
            + ("the run finished: its summary.json is there" if finished else "the run was stopped before its final evaluation")
            + f"); raise --max-steps to train further, or evaluate {checkpoint} with cobarl eval"
        )


def prepare_run_dir(config: TrainConfig, run_dir: Path, *, is_main: bool, world: int, log: Callable[[str], None]) -> Path | None:
    """Decide what happens to ``run_dir``; returns the checkpoint to resume from (None: start at step 0).

    Only the main process changes files (sets damaged checkpoints or an old run aside)."""
    if config.resume:
        if not holds_run(run_dir):
            raise FileNotFoundError(f"--resume: {run_dir} holds no run (no {CONFIG_FILE}, no checkpoint)")
        check_resume_config(config, run_dir)
        checkpoint = select_checkpoint(run_dir, log=log, set_aside=is_main)
        if checkpoint is None:
            log(f"cobarl train: {run_dir} has no complete checkpoint yet; starting it over from step 0 with its saved config")
        else:
            check_resume_world(checkpoint, world, config.allow_config_change)
            check_resume_state(checkpoint, config)
            # A checkpoint at exactly --max-steps without a summary was interrupted in its final evaluation:
            # run() finishes it (evaluates and summarises). Anything past it, or already summarised, is refused.
            if (run_dir / "summary.json").is_file() or config.lora_r or checkpoint_step(checkpoint) > config.max_steps:
                check_resume_step(checkpoint, config.max_steps)
        return checkpoint
    # Only the main process judges the directory: the others may look after it has written config.yaml.
    # When it refuses, the launcher (torchrun, accelerate) stops the other processes.
    if is_main and holds_run(run_dir):
        if not config.fresh:
            raise FileExistsError(
                f"{run_dir} already holds a run; continue it with --resume, start over with --fresh "
                "(moves the old run aside), or pick another --output-dir"
            )
        log(f"cobarl train: moved the previous run aside to {move_aside(run_dir)}")
    elif is_main and foreign_files(run_dir):
        names = foreign_files(run_dir)
        raise FileExistsError(
            f"{run_dir} already holds files that are not a cobarl run ({', '.join(names[:5])}"
            + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            + "); a run writes config.yaml, metrics.jsonl and checkpoints into its folder and would mix with them. "
            "Pass an --output-dir that does not exist yet or is empty")
    return None


def check_resume_state(checkpoint: Path, config: TrainConfig) -> None:
    """Refuse an allocator state whose count of observed generations does not match the checkpoint's step
    (a wiped or replaced ``cobarl_state.json`` would resume with statistics of another run, or none)."""
    state = json.loads((checkpoint / "cobarl_state.json").read_text())
    step = checkpoint_step(checkpoint)
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


def _device(config: TrainConfig) -> str:
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA GPU is available")
    return config.device


def check_extras(config: TrainConfig) -> None:
    """Optional packages the options need, checked before any work."""
    import importlib.util

    if config.lora_r and importlib.util.find_spec("peft") is None:
        raise ImportError("--lora-r needs peft: pip install 'cobarl[peft]'")
    for tracker in report_to(config):
        module = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}.get(tracker)
        if module and importlib.util.find_spec(module) is None and not (tracker == "tensorboard" and importlib.util.find_spec("tensorboardX")):
            raise ImportError(f"--report-to {tracker} needs the {module} package: pip install {module}")


def report_to(config: TrainConfig) -> list[str]:
    names = [n.strip() for n in config.report_to.split(",") if n.strip()]
    return [] if names in ([], ["none"]) else names


def _load_data(config: TrainConfig):
    """(train, held-out, validation or None): three disjoint splits."""
    if config.dataset is None:
        return embedded_datasets(train_size=config.train_size, eval_size=config.eval_size, seed=config.seed,
                                 validation_size=config.validation_size, task=config.task)
    train_ds = load_dataset_file(config.dataset)
    if config.eval_dataset is not None:
        eval_ds = load_dataset_file(config.eval_dataset, limit=config.eval_size)
    else:
        train_ds, eval_ds = split_held_out(train_ds, config.eval_size)
    if not config.validation_size:
        return train_ds, eval_ds, None
    if config.validation_size > len(train_ds) // 2:
        raise ValueError(f"--validation-size {config.validation_size} would take more than half of the "
                         f"{len(train_ds)} training rows of {config.dataset}; pass at most {len(train_ds) // 2}")
    return (train_ds.select(range(len(train_ds) - config.validation_size)), eval_ds,
            train_ds.select(range(len(train_ds) - config.validation_size, len(train_ds))))


def _set_threads(config: TrainConfig, device: str) -> None:
    import torch

    if device == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    elif device == "cpu" and config.model is None:
        # Tiny matmuls: one thread avoids OpenMP spin/handoff costs (~50x faster on a busy 2-core box).
        torch.set_num_threads(1)


def _write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, indent=2)


def run(config: TrainConfig, *, log: Callable[[str], None] = print, allocator=None) -> RunSummary | None:
    """Train with adaptive budgets as configured; returns (and writes) the summary on the main process,
    None on the others. ``allocator``: a `cobarl.Allocator` to use instead of one built from the config
    (e.g. with a callable strategy, which a config file cannot name).

    Under torchrun / accelerate the process group is ended once training is over (see
    `_end_process_group`): a caller that needs collectives afterwards must start a new one."""
    started = time.perf_counter()
    if config.dataset is None and config.task is None:  # config.yaml records which embedded task ran
        from cobarl.tasks.embedded import DEFAULT_TASK

        config = config.replace(task=DEFAULT_TASK)
    rank, world = process_rank()
    is_main = rank == 0
    say = log if is_main else (lambda _msg: None)
    # Everything that can be refused is refused here, on every process, before any file or model.
    batch_layout(config, world)
    verifier = load_reward(config.reward, timeout=config.reward_timeout, workers=config.reward_workers)
    check_extras(config)
    device = _device(config)
    train_ds, eval_ds, val_ds = _load_data(config)
    if config.prompts_per_step > len(train_ds):
        raise ValueError(f"prompts_per_step ({config.prompts_per_step}) exceeds the {len(train_ds)} training prompts")
    probe_verifier(verifier, eval_ds["answer"])
    run_dir = resolve_run_dir(config)
    lock = FolderLock(run_dir, "run") if is_main else None
    if lock is not None:
        lock.acquire()
    try:
        checkpoint = prepare_run_dir(config, run_dir, is_main=is_main, world=world, log=say)
        if lock is not None and not lock.folder.joinpath(LOCK_FILE).exists():  # --fresh moved the old run (and lock) aside
            old, lock = lock, FolderLock(run_dir, "run").acquire()
            old.release()
        return _run_in(config, run_dir, checkpoint, train_ds, eval_ds, val_ds, verifier, device, world, is_main, say,
                       allocator, started)
    except BaseException:
        if lock is not None:
            lock.release(remove_if_created=True)
            lock = None
        raise
    finally:
        if lock is not None:
            lock.release()


def _run_in(config, run_dir, checkpoint, train_ds, eval_ds, val_ds, verifier, device, world, is_main, say, allocator,
            started) -> RunSummary | None:
    """`run` once its folder is locked and judged."""
    finishing = checkpoint is not None and checkpoint_step(checkpoint) >= config.max_steps
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(config.replace(output_dir=str(run_dir), resume=False, fresh=False), run_dir / CONFIG_FILE)
        repair_metrics(run_dir / METRICS_FILE, checkpoint)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars drown our own
    _set_threads(config, device)
    model_path = resolve_model_path(config.model, seed=config.seed, task=config.task)
    model, tokenizer = load_policy(model_path)
    say(f"cobarl train: model {model_path} | {len(train_ds)} train / {len(eval_ds)} held-out prompts | "
        f"allocator {config.strategy} | {config.prompts_per_step} prompts x ~{config.rollouts_per_step / config.prompts_per_step:g} "
        f"= {config.rollouts_per_step} rollouts per optimizer step across {world} process(es) | run dir {run_dir}")

    tally = {"failures": 0, "calls": 0}  # reward calls of every held-out evaluation of this process

    def evaluate(m) -> dict[str, float]:
        """Held-out greedy accuracy (overall and per level) and sampled avg@8, under the schema's names;
        failed reward calls are counted in ``tally`` and stop it at --reward-failure-limit."""
        kw = dict(max_new_tokens=config.max_completion_length, seed=config.seed, failure_limit=config.reward_failure_limit)
        failed_before = _failure_count(verifier)
        greedy = held_out_accuracy(m, tokenizer, eval_ds, verifier, **kw)
        out = {k.replace("accuracy", M.EVAL_HELDOUT_GREEDY, 1): v for k, v in greedy.items()}
        out[M.EVAL_HELDOUT_ACCURACY] = held_out_accuracy(m, tokenizer, eval_ds, verifier, temperature=config.temperature,
                                                         num_samples=8, **kw)["accuracy"]
        tally["failures"] += _failure_count(verifier) - failed_before
        tally["calls"] += 9 * len(eval_ds)
        return out

    before = buckets_before = None
    if is_main:
        before_path = run_dir / "eval_before.json"
        if before_path.is_file():
            before = json.loads(before_path.read_text())
        else:
            failed_before = tally["failures"]
            before = evaluate(model)
            if tally["failures"] == failed_before:
                _write_json(before_path, before)
            else:  # never reused: a resume evaluates the starting model again
                say(f"WARNING: {tally['failures'] - failed_before} reward calls of the before-RL evaluation failed "
                    f"(scored 0); its accuracy is a lower bound and is not saved for --resume")
        if config.transitions:  # kept like eval_before.json: a resumed run starts from the same buckets
            buckets_path = run_dir / TRANSITIONS_BEFORE_FILE
            buckets_before = (json.loads(buckets_path.read_text()) if buckets_path.is_file()
                              else train_buckets(model, tokenizer, train_ds, verifier, config))
            _write_json(buckets_path, buckets_before)
        say(f"held-out accuracy before RL: {before[M.EVAL_HELDOUT_GREEDY]:.3f} (greedy), "
            f"{before[M.EVAL_HELDOUT_ACCURACY]:.3f} (sampled)")

    if finishing:  # interrupted during its final evaluation: evaluate and summarise only
        say(f"cobarl train: {checkpoint.name} reached --max-steps {config.max_steps}; finishing the run "
            "(final evaluation and summary) without training")
        if not is_main:
            return None
        trained, steps = load_policy(checkpoint)[0], checkpoint_step(checkpoint)
    else:
        trainer = build_trainer(config, model, tokenizer, train_ds, verifier, run_dir=run_dir, device=device,
                                eval_fn=evaluate if config.eval_every else None, allocator=allocator)
        if checkpoint is not None:
            say(f"resuming from {checkpoint}")
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        _end_process_group()
        if not is_main:
            return None
        trained, steps = trainer.model, trainer.state.global_step
    after = evaluate(trained)
    if val_ds is not None:  # for choosing settings; never the number a comparison reports
        failed_before = _failure_count(verifier)
        after[M.EVAL_VALIDATION_ACCURACY] = held_out_accuracy(
            trained, tokenizer, val_ds, verifier, temperature=config.temperature, num_samples=8,
            max_new_tokens=config.max_completion_length, seed=config.seed,
            failure_limit=config.reward_failure_limit)["accuracy"]
        tally["failures"] += _failure_count(verifier) - failed_before
        tally["calls"] += 8 * len(val_ds)
    summary = summarise(config, run_dir, steps, before, after, started, checkpoint, world)
    summary.eval_reward_failures, summary.eval_reward_calls = tally["failures"], tally["calls"]
    if buckets_before is not None:
        summary.transitions = transition_counts(buckets_before, train_buckets(trained, tokenizer, train_ds,
                                                                              verifier, config))
    _write_json(run_dir / "summary.json", asdict(summary))
    return summary


def _end_process_group() -> None:
    """End torch.distributed on every rank once training is over (the final evaluation runs on the
    main process alone and needs no collective).

    Left to interpreter exit, gloo's worker threads now and then aborted a rank ("terminate called
    without an active exception", SIGABRT) and failed the launch. The barrier first: a rank that
    tore its group down while the other was still finishing the last collective hung it.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def summarise(config, run_dir: Path, steps: int, before, after, started: float, checkpoint, world: int) -> RunSummary:
    rows = read_metrics(run_dir / METRICS_FILE)
    generations = [r for r in rows if r.get(M.ROLLOUT_COUNT)]  # with num_iterations > 1 only some steps generate
    step_s = [r.get(M.PERF_STEP_S) or 0.0 for r in rows]
    rollouts = int(sum(r[M.ROLLOUT_COUNT] for r in generations))
    failures = int(sum(r.get(M.REWARD_FAILURES) or 0 for r in generations))
    return RunSummary(
        run_dir=str(run_dir),
        steps=steps,
        rollouts=rollouts,
        effective_ratio=sum(r.get(M.ROLLOUT_EFFECTIVE_RATIO) or 0.0 for r in generations) / max(len(generations), 1),
        accuracy_before=before,
        accuracy_after=after,
        initial_heldout_accuracy=before[M.EVAL_HELDOUT_ACCURACY],
        final_heldout_accuracy=after[M.EVAL_HELDOUT_ACCURACY],
        seconds=time.perf_counter() - started,
        seconds_per_step=sum(step_s) / max(len(rows), 1),
        rollouts_per_second=rollouts / max(sum(step_s), 1e-9),
        overhead_frac=sum(r.get(M.PERF_OVERHEAD_FRAC) or 0.0 for r in rows) / max(len(rows), 1),
        resumed_from=str(checkpoint) if checkpoint is not None else None,
        processes=world,
        rollouts_per_step=config.rollouts_per_step,
        allocations=len(generations),
        reward_failures=failures,
        reward_calls=rollouts,
    )


def _lora_config(config: TrainConfig):
    if not config.lora_r:
        return None
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                      task_type="CAUSAL_LM")


def build_trainer(config: TrainConfig, model, tokenizer, train_ds, verifier, *, run_dir: Path, device: str,
                  eval_fn=None, allocator=None, callbacks=None):
    """The `AdaptiveGRPOTrainer` for ``config`` (also used by tests)."""
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from cobarl.train.trainer import AdaptiveGRPOConfig, AdaptiveGRPOTrainer

    micro, _ = batch_layout(config, process_rank()[1])
    on_gpu = device == "cuda"
    trackers = report_to(config)  # tensorboard writes under <run dir>/runs/ unless TENSORBOARD_LOGGING_DIR is set
    args = AdaptiveGRPOConfig(
        output_dir=str(run_dir),
        seed=config.seed,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=micro,
        rollouts_per_step=config.rollouts_per_step,
        prompts_per_step=config.prompts_per_step,
        allocator=config.allocator_config(),
        reward_failure_limit=config.reward_failure_limit,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        beta=config.kl_beta,
        num_iterations=config.num_iterations,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=trackers or "none",
        disable_tqdm=True,
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=on_gpu and config.model is not None,
        dataloader_num_workers=0,
        ddp_backend="gloo" if not on_gpu and process_rank()[1] > 1 else None,
    )
    trainer = AdaptiveGRPOTrainer(
        model=model,
        reward_funcs=make_reward_func(verifier, workers=config.reward_workers),
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        allocator=allocator,
        eval_fn=eval_fn,
        eval_every=config.eval_every,
        peft_config=_lora_config(config),
        callbacks=callbacks if callbacks is not None else make_callbacks(run_dir, max_steps=config.max_steps, progress=config.progress),
    )
    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace the printed dicts
    trainer.remove_callback(ProgressCallback)
    return trainer
