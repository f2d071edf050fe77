"""Build everything for `cobarl train`, run it, and summarise.

``run(config)`` is the whole pipeline; the CLI only parses arguments into a `TrainConfig`::

    model, data   <- embedded tiny model + arithmetic task, or --model / --dataset
    accuracy      <- held-out accuracy of the starting model
    trainer       <- AdaptiveGRPOTrainer(reward = registry[--reward]) + metrics/progress callbacks
    train         <- TRL loop; checkpoint-N/ (with cobarl_state.json) every --save-steps
    accuracy      <- held-out accuracy after RL; summary.json

Run directory: ``config.yaml``, ``metrics.jsonl`` (one JSON object per step, appended, flushed and
fsynced), ``checkpoint-N/``, ``eval_before.json``, ``summary.json``.
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

from cobarl.rewards.registry import load_reward
from cobarl.train.config import TrainConfig, dump_yaml
from cobarl.train.data import embedded_datasets, load_dataset_file, split_held_out

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
RUNS_ROOT = Path("runs")

# --- rewards: a name or a callable(completion, answer) -> float -----------------------------------


def completion_text(completion: Any) -> str:
    """TRL passes a string, or a chat list whose last message is the assistant's."""
    return completion if isinstance(completion, str) else str(completion[-1]["content"])


def make_reward_func(verifier: Callable[[str, str], float], name: str = "correct") -> Callable:
    """Adapt ``verifier(completion, answer)`` to TRL's ``f(prompts, completions, answer, ...) -> list``."""

    def reward(prompts, completions, answer, **_: Any) -> list[float]:
        return [float(verifier(completion_text(c), a)) for c, a in zip(completions, answer, strict=True)]

    reward.__name__ = name
    return reward


# --- model ---------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("COBARL_CACHE", Path.home() / ".cache" / "cobarl"))


def resolve_model_path(model: str | None, *, seed: int = 0) -> str:
    """Local path or hub name of the policy; ``None`` builds (once) and caches the embedded tiny model."""
    if model is None:
        from cobarl.models.tiny import ensure_default_model

        return str(ensure_default_model(cache_dir(), seed=seed))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model path {path} has no config.json; expected a save_pretrained directory")
        return str(path)
    looks_local = model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or model.endswith("/")
    if looks_local:
        raise FileNotFoundError(f"model path does not exist: {path}")
    return model  # a hub name; from_pretrained reports whether it can be fetched


def load_policy(name_or_path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path)
    except OSError as e:
        raise FileNotFoundError(
            f"could not load model {name_or_path!r} (not a local directory, and not fetchable from the hub"
            f"{' while HF_HUB_OFFLINE=1' if os.environ.get('HF_HUB_OFFLINE') == '1' else ''}): {e}"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# --- evaluation ----------------------------------------------------------------------------------


def held_out_accuracy(model, tokenizer, dataset, verifier, *, max_new_tokens: int, batch_size: int = 128,
                      temperature: float = 0.0, num_samples: int = 1, seed: int = 0) -> dict[str, float]:
    """Mean verifier score on ``dataset`` (greedy when ``temperature == 0``), overall and per difficulty."""
    import torch

    model_was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    prompts = [p for p in dataset["prompt"] for _ in range(num_samples)]
    answers = [a for a in dataset["answer"] for _ in range(num_samples)]
    levels = [d for d in (dataset["difficulty"] if "difficulty" in dataset.column_names else [None] * len(dataset))
              for _ in range(num_samples)]
    texts = [p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in prompts]
    scores: list[float] = []
    gen = torch.Generator(device="cpu").manual_seed(seed)
    try:
        with torch.no_grad():
            for lo in range(0, len(texts), batch_size):
                enc = tokenizer(texts[lo : lo + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(model.device) for k, v in enc.items()}
                sampling = {"do_sample": False} if temperature == 0 else {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling)
                decoded = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                scores.extend(float(verifier(c, a)) for c, a in zip(decoded, answers[lo : lo + batch_size]))
    finally:
        tokenizer.padding_side = side
        model.train(model_was_training)
    result = {"accuracy": sum(scores) / max(len(scores), 1)}
    for level in sorted({lv for lv in levels if lv is not None}):
        s = [x for x, lv in zip(scores, levels) if lv == level]
        result[f"accuracy/level_{level}"] = sum(s) / len(s)
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


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop lines for steps after ``last_step`` (they will be redone on resume); atomic rewrite."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from a kill: drop it and everything after
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


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
                    reward=f"{logs.get('reward/mean', float('nan')):.3f}",
                    eff=f"{logs.get('rollout/effective_ratio', float('nan')):.2f}",
                    alpha=f"{logs.get('capability/alpha', float('nan')):.2f}",
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
    accuracy_before: dict[str, float]
    accuracy_after: dict[str, float]
    seconds: float
    seconds_per_step: float
    rollouts_per_second: float
    overhead_frac: float
    resumed_from: str | None = None

    def text(self) -> str:
        b, a = self.accuracy_before, self.accuracy_after
        lines = [
            f"held-out accuracy (greedy): {b.get('accuracy', float('nan')):.3f} -> {a.get('accuracy', float('nan')):.3f}",
        ]
        if "sampled" in b:
            lines.append(f"held-out accuracy (sampled, T=1): {b['sampled']:.3f} -> {a['sampled']:.3f}")
        lines += [
            f"steps: {self.steps}   rollouts spent: {self.rollouts}   mean effective ratio: {self.effective_ratio:.3f}",
            f"time: {self.seconds:.0f}s   {self.seconds_per_step:.2f} s/step   {self.rollouts_per_second:.0f} rollouts/s   "
            f"allocation overhead: {100 * self.overhead_frac:.2f}% of step time",
            f"run directory: {self.run_dir}",
        ]
        return "\n".join(lines)


def resolve_run_dir(config: TrainConfig) -> Path:
    if config.output_dir is not None:
        return Path(config.output_dir).expanduser()
    if config.resume:
        runs = sorted(RUNS_ROOT.glob("train-*"), key=lambda p: p.stat().st_mtime) if RUNS_ROOT.is_dir() else []
        if not runs:
            raise FileNotFoundError(f"--resume: no run under {RUNS_ROOT}/; pass --output-dir RUN_DIR")
        return runs[-1]
    return RUNS_ROOT / time.strftime("train-%Y%m%d-%H%M%S")


def _device(config: TrainConfig) -> str:
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA GPU is available")
    return config.device


def run(config: TrainConfig, *, log: Callable[[str], None] = print) -> RunSummary:
    """Train with adaptive budgets as configured; returns (and writes) the summary."""
    from cobarl.train.trainer import last_complete_checkpoint

    started = time.perf_counter()
    run_dir = resolve_run_dir(config)
    checkpoint = None
    if config.resume:
        checkpoint = last_complete_checkpoint(run_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {run_dir}")
    elif last_complete_checkpoint(run_dir) is not None:
        raise FileExistsError(f"{run_dir} already holds checkpoints; pass --resume to continue it or pick another --output-dir")
    # Fail on a bad name before any heavy work; the guard turns a verifier that raises or hangs
    # on one completion into a 0 reward and a counted warning.
    verifier = load_reward(config.reward)
    device = _device(config)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars drown our own
    embedded_model = config.model is None
    if device == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    elif device == "cpu" and embedded_model:
        # Tiny matmuls: one thread avoids OpenMP spin/handoff costs (~50x faster on a busy 2-core box).
        torch.set_num_threads(1)

    # data
    if config.dataset is None:
        train_ds, eval_ds = embedded_datasets(train_size=config.train_size, eval_size=config.eval_size, seed=config.seed)
    else:
        train_ds = load_dataset_file(config.dataset)
        if config.eval_dataset is not None:
            eval_ds = load_dataset_file(config.eval_dataset, limit=config.eval_size)
        else:
            train_ds, eval_ds = split_held_out(train_ds, config.eval_size)
    if config.prompts_per_step > len(train_ds):
        raise ValueError(f"prompts_per_step ({config.prompts_per_step}) exceeds the {len(train_ds)} training prompts")

    # model
    model_path = resolve_model_path(config.model, seed=config.seed)
    model, tokenizer = load_policy(model_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml(config.replace(output_dir=str(run_dir)), run_dir / CONFIG_FILE)
    log(f"cobarl train: model {model_path} | {len(train_ds)} train / {len(eval_ds)} held-out prompts | "
        f"allocator {config.allocator} | {config.prompts_per_step} prompts x ~{config.rollouts_per_step / config.prompts_per_step:g} "
        f"= {config.rollouts_per_step} rollouts/step | run dir {run_dir}")

    def evaluate(m) -> dict[str, float]:
        kw = dict(max_new_tokens=config.max_completion_length, seed=config.seed)
        out = held_out_accuracy(m, tokenizer, eval_ds, verifier, **kw)
        out["sampled"] = held_out_accuracy(m, tokenizer, eval_ds, verifier, temperature=config.temperature,
                                           num_samples=8, **kw)["accuracy"]  # avg@8
        return out

    before_path = run_dir / "eval_before.json"
    if checkpoint is not None and before_path.is_file():
        before = json.loads(before_path.read_text())
    else:
        before = evaluate(model)
        tmp = before_path.with_name(before_path.name + ".tmp")
        tmp.write_text(json.dumps(before))
        os.replace(tmp, before_path)
    log(f"held-out accuracy before RL: {before['accuracy']:.3f} (greedy), {before['sampled']:.3f} (sampled)")

    trainer = build_trainer(config, model, tokenizer, train_ds, verifier, run_dir=run_dir, device=device,
                            eval_fn=(lambda m: {"accuracy": held_out_accuracy(m, tokenizer, eval_ds, verifier,
                                                                             max_new_tokens=config.max_completion_length)["accuracy"]})
                            if config.eval_every else None)
    if checkpoint is not None:
        truncate_metrics(run_dir / METRICS_FILE, int(checkpoint.name.split("-")[1]))
        log(f"resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)

    after = evaluate(trainer.model)
    rows = [r for r in read_metrics(run_dir / METRICS_FILE)]
    steps = len(rows)
    step_s = [r.get("perf/step_s") or 0.0 for r in rows]
    rollouts = int(sum(r.get("rollout/count") or 0 for r in rows))
    summary = RunSummary(
        run_dir=str(run_dir),
        steps=trainer.state.global_step,
        rollouts=rollouts,
        effective_ratio=sum(r.get("rollout/effective_ratio") or 0.0 for r in rows) / max(steps, 1),
        accuracy_before=before,
        accuracy_after=after,
        seconds=time.perf_counter() - started,
        seconds_per_step=sum(step_s) / max(steps, 1),
        rollouts_per_second=rollouts / max(sum(step_s), 1e-9),
        overhead_frac=sum(r.get("perf/overhead_frac") or 0.0 for r in rows) / max(steps, 1),
        resumed_from=str(checkpoint) if checkpoint is not None else None,
    )
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(asdict(summary), indent=2))
    os.replace(tmp, run_dir / "summary.json")
    return summary


def build_trainer(config: TrainConfig, model, tokenizer, train_ds, verifier, *, run_dir: Path, device: str,
                  eval_fn=None, allocator=None, callbacks=None):
    """The `AdaptiveGRPOTrainer` for ``config`` (also used by tests)."""
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from cobarl.train.trainer import AdaptiveGRPOConfig, AdaptiveGRPOTrainer

    budget = config.rollouts_per_step
    micro = config.micro_batch_size or budget
    on_gpu = device == "cuda"
    args = AdaptiveGRPOConfig(
        output_dir=str(run_dir),
        seed=config.seed,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=budget // micro,
        rollouts_per_step=budget,
        prompts_per_step=config.prompts_per_step,
        allocator=config.allocator,
        min_budget=config.min_budget,
        max_budget=config.max_budget,
        kappa=config.kappa,
        window=config.window,
        gamma=config.gamma,
        tau=config.tau_value,
        allocator_options={"fixed_alpha": config.fixed_alpha, "fixed_beta": config.fixed_beta},
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        beta=config.beta,
        num_iterations=config.num_iterations,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=on_gpu and config.model is not None,
        dataloader_num_workers=0,
    )
    trainer = AdaptiveGRPOTrainer(
        model=model,
        reward_funcs=make_reward_func(verifier),
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        allocator=allocator,
        eval_fn=eval_fn,
        eval_every=config.eval_every,
        callbacks=callbacks if callbacks is not None else make_callbacks(run_dir, max_steps=config.max_steps, progress=config.progress),
    )
    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace the printed dicts
    trainer.remove_callback(ProgressCallback)
    return trainer



def run_training(options: dict) -> dict:
    """The ``cobarl compare --backend real`` entry point: one run, per-step rows and a summary.

    ``options`` holds ``allocator``, ``allocator_overrides`` (AllocatorConfig fields),
    ``seed``, ``max_steps``, ``prompts_per_step``, ``rollouts_per_prompt`` and ``progress``, plus
    any other `TrainConfig` field (e.g. ``output_dir``, ``model``, ``dataset``).
    """
    options = dict(options)
    # Parallel workers may start runs within the same second: give each its own directory.
    options.setdefault(
        "output_dir",
        str(RUNS_ROOT / f"real-{options.get('allocator', 'coba')}-seed{options.get('seed', 0)}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"),
    )
    # Strategy overrides (e.g. fixed_alpha for fixed-beta-1.5-10.5) are TrainConfig fields.
    options.update(options.pop("allocator_overrides", None) or {})
    config = TrainConfig(**options)
    summary = run(config, log=lambda _: None)
    rows = read_metrics(Path(summary.run_dir) / METRICS_FILE)
    for row in rows:
        if "eval/accuracy" not in row:
            continue
        row["eval/heldout_accuracy"] = row["eval/accuracy"]
    if rows:
        rows[-1]["eval/heldout_accuracy"] = summary.accuracy_after.get("sampled", summary.accuracy_after.get("accuracy"))
    return {"rows": rows, "summary": asdict(summary)}
