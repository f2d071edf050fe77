"""The model and trainer stages of `cobarl train`: the device and CPU threads, optional packages,
trackers, LoRA, and the `AdaptiveGRPOTrainer` itself."""

from __future__ import annotations

from pathlib import Path

from cobarl.train.config import TrainConfig
from cobarl.train.metrics_log import make_callbacks
from cobarl.train.rewards import make_reward_func
from cobarl.train.rundir import process_rank


def pick_device(config: TrainConfig) -> str:
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


def set_threads(config: TrainConfig, device: str) -> None:
    import torch

    if device == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    elif device == "cpu" and config.model is None:
        # Tiny matmuls: one thread avoids OpenMP spin/handoff costs (~50x faster on a busy 2-core box).
        torch.set_num_threads(1)


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

    layout = config.layout(process_rank()[1])
    on_gpu = device == "cuda"
    trackers = report_to(config)  # tensorboard writes under <run dir>/runs/ unless TENSORBOARD_LOGGING_DIR is set
    args = AdaptiveGRPOConfig(
        output_dir=str(run_dir),
        seed=config.seed,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        layout=layout,
        strategy=config.strategy_config(),
        reward_failure_limit=config.reward_failure_limit,
        max_generated=config.max_generated,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        beta=config.kl_beta,
        num_iterations=config.num_iterations,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        vllm_server_base_url=config.vllm_server_url,
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
