"""`cobarl train` as named stages, top to bottom: ``run(config)`` is the whole pipeline; the CLI only
parses arguments into a `TrainConfig`::

    checks        <- every option, the reward (`cobarl.train.rewards`), the extras: on every process
    data          <- train / held-out / validation splits (`cobarl.train.data.load_splits`)
    run folder    <- locked, judged, resumed or moved aside (`cobarl.train.rundir`)
    model         <- embedded task's tiny model, or --model (`cobarl.models.load`)
    accuracy      <- held-out accuracy of the starting model (`cobarl.train.evaluate`)
    trainer       <- AdaptiveGRPOTrainer + metrics/progress callbacks (`cobarl.train.build`)
    train         <- TRL loop; checkpoint-N/ (with cobarl_state.json) every --save-steps
    accuracy      <- held-out (and validation) accuracy after RL
    summary       <- summary.json (`cobarl.train.summary`)

Run directory: ``config.yaml``, ``data_fingerprint.json`` (the prompts' content, checked by ``--resume``),
``metrics.jsonl`` (one JSON object per step, appended, flushed and fsynced), ``checkpoint-N/``,
``eval_before.json`` (and ``train_buckets_before.json`` with ``--transitions``), ``summary.json``. A new
run goes only into a folder that does not exist or is empty; one that holds a run is never appended to:
``--resume`` continues it, ``--fresh`` moves it aside; ``.cobarl.lock`` keeps a second process out while
a run writes (docs/reliability.md lists every such promise). With several processes (torchrun, accelerate
launch) only the main process writes these files, evaluates and prints; every process validates the same
options before any model is loaded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cobarl import metrics as M
from cobarl.io import LOCK_FILE, FolderLock, load_state, write_json
from cobarl.models.load import load_model, resolve_model_path
from cobarl.rewards import load_reward
from cobarl.stats import transition_counts
from cobarl.train.build import build_trainer, check_extras, pick_device, set_threads
from cobarl.train.checkpoints import checkpoint_step, run_finished
from cobarl.train.config import TrainConfig
from cobarl.train.config_files import dump_yaml
from cobarl.train.layout import check_strategy
from cobarl.train.data import load_splits
from cobarl.train.evaluate import RunEvaluator, train_buckets
from cobarl.train.fingerprint import DATA_FILE, data_fingerprint
from cobarl.train.metrics_log import METRICS_FILE, repair_metrics
from cobarl.train.rewards import probe_verifier
from cobarl.train.rundir import CONFIG_FILE, TRANSITIONS_BEFORE_FILE, prepare_run_dir, process_rank, resolve_run_dir
from cobarl.train.summary import RunSummary, summarise_run


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
    layout = config.layout(world)
    verifier = load_reward(config.reward, timeout=config.reward_timeout, workers=config.reward_workers)
    check_extras(config)
    device = pick_device(config)
    train_ds, eval_ds, val_ds = load_splits(config)
    if config.prompts_per_step > len(train_ds):
        raise ValueError(f"prompts_per_step ({config.prompts_per_step}) exceeds the {len(train_ds)} training prompts")
    errors = check_strategy(config.strategy_config(), layout, len(train_ds))
    if errors:  # a policy drawing from the data (DAPO, GRESO), checked against the data's real size
        raise ValueError("invalid train config:\n  " + "\n  ".join(errors))
    probe_verifier(verifier, eval_ds["answer"])
    data = data_fingerprint(train_ds, eval_ds, val_ds)
    run_dir = resolve_run_dir(config)
    lock = FolderLock(run_dir, "run") if is_main else None
    if lock is not None:
        lock.acquire()
    try:
        checkpoint = prepare_run_dir(config, run_dir, is_main=is_main, world=world, log=say, data=data,
                                     train_prompts=len(train_ds) if allocator is None else None)
        if lock is not None and not lock.folder.joinpath(LOCK_FILE).exists():  # --fresh moved the old run (and lock) aside
            old, lock = lock, FolderLock(run_dir, "run").acquire()
            old.release()
        if is_main:  # every check passed: now the run folder is written
            run_dir.mkdir(parents=True, exist_ok=True)
            repair_metrics(run_dir / METRICS_FILE, checkpoint)
            dump_yaml(config.replace(output_dir=str(run_dir), resume=False, fresh=False), run_dir / CONFIG_FILE)
            _write_json(run_dir / DATA_FILE, data)
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
    """`run` once its folder is locked and judged: model -> accuracy before -> train -> accuracy after -> summary."""
    finishing = run_finished(checkpoint, config.max_steps, config.max_generated)
    model, tokenizer = _load_model(config, device, len(train_ds), len(eval_ds), world, run_dir, say)
    evaluate = RunEvaluator(config, tokenizer, eval_ds, verifier)  # every held-out evaluation of this process
    before = buckets_before = None
    if is_main:
        before, buckets_before = _before_rl(config, run_dir, model, tokenizer, train_ds, verifier, evaluate, say)
        if checkpoint is not None:  # the counts of the evaluations up to the checkpoint, before-RL included
            evaluate.restore(load_state(checkpoint).get("eval"))
    if finishing:  # interrupted during its final evaluation: evaluate and summarise only
        say(f"cobarl train: {checkpoint.name} reached --max-steps or --max-generated; finishing the run "
            "(final evaluation and summary) without training")
        if not is_main:
            return None
        trained, steps = load_model(checkpoint)[0], checkpoint_step(checkpoint)
    else:
        trainer = build_trainer(config, model, tokenizer, train_ds, verifier, run_dir=run_dir, device=device,
                                eval_fn=evaluate, allocator=allocator)  # called every --eval-every steps (0: never)
        if checkpoint is not None:
            say(f"resuming from {checkpoint}")
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        _end_process_group()
        if not is_main:
            return None
        trained, steps = trainer.model, trainer.state.global_step
    after = evaluate(trained)
    if val_ds is not None:  # for choosing settings; never the number a comparison reports
        after[M.EVAL_VALIDATION_ACCURACY] = evaluate.validation(trained, val_ds)
    summary = summarise_run(config, run_dir, steps, before, after, started, checkpoint, world)
    summary.eval_reward_failures, summary.eval_reward_calls = evaluate.failures, evaluate.calls
    if buckets_before is not None:
        summary.transitions = transition_counts(buckets_before, train_buckets(trained, tokenizer, train_ds,
                                                                              verifier, config))
    _write_json(run_dir / "summary.json", asdict(summary))
    return summary


def _load_model(config: TrainConfig, device: str, n_train: int, n_eval: int, world: int, run_dir: Path,
                say: Callable[[str], None]):
    """The starting model and its tokenizer, on this process's threads."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars drown our own
    set_threads(config, device)
    model_path = resolve_model_path(config.model, seed=config.seed, task=config.task)
    model, tokenizer = load_model(model_path)
    say(f"cobarl train: model {model_path} | {n_train} train / {n_eval} held-out prompts | "
        f"strategy {config.strategy_name} | {config.prompts_per_step} prompts x ~{config.rollouts_per_step / config.prompts_per_step:g} "
        f"= {config.rollouts_per_step} rollouts per optimizer step across {world} process(es) | run dir {run_dir}")
    return model, tokenizer


def _before_rl(config: TrainConfig, run_dir: Path, model, tokenizer, train_ds, verifier, evaluate: RunEvaluator,
               say: Callable[[str], None]) -> tuple[dict[str, float], list[int] | None]:
    """Held-out accuracy of the starting model (and, with --transitions, the train prompts' buckets);
    both saved so a resumed run starts from the same numbers (main process only)."""
    before_path = run_dir / "eval_before.json"
    if before_path.is_file():
        before = json.loads(before_path.read_text())
    else:
        failed_before = evaluate.failures
        before = evaluate(model)
        if evaluate.failures == failed_before:
            _write_json(before_path, before)
        else:  # never reused: a resume evaluates the starting model again
            say(f"WARNING: {evaluate.failures - failed_before} reward calls of the before-RL evaluation failed "
                f"(scored 0); its accuracy is a lower bound and is not saved for --resume")
    buckets_before = None
    if config.transitions:  # kept like eval_before.json: a resumed run starts from the same buckets
        buckets_path = run_dir / TRANSITIONS_BEFORE_FILE
        buckets_before = (json.loads(buckets_path.read_text()) if buckets_path.is_file()
                          else train_buckets(model, tokenizer, train_ds, verifier, config))
        _write_json(buckets_path, buckets_before)
    say(f"held-out accuracy before RL: {before[M.EVAL_HELDOUT_GREEDY]:.3f} (greedy), "
        f"{before[M.EVAL_HELDOUT_ACCURACY]:.3f} (sampled)")
    return before, buckets_before


def _end_process_group() -> None:
    """End torch.distributed on every rank once training is over (the final evaluation runs on the
    main process alone and needs no collective).

    Left to interpreter exit, gloo's worker threads now and then aborted a rank ("terminate called
    without an active exception", SIGABRT) and failed the launch. The barrier first: a rank that
    tore its group down while the other was still finishing the last collective hung it.
    """
    from datetime import timedelta

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        # gloo's barrier can return on one rank while another still waits for its last message; a group
        # torn down then leaves that rank hung in the barrier (seen once in ~20 two-process launches).
        # Each rank records in the launcher's store that its barrier returned, and none tears down
        # before all have.
        store = dist.distributed_c10d._get_default_store()
        store.set(f"cobarl/end/{dist.get_rank()}", "1")
        store.wait([f"cobarl/end/{r}" for r in range(dist.get_world_size())], timedelta(minutes=5))
        dist.destroy_process_group()
