"""GRPO training with per-prompt rollout budgets on TRL (`cobarl train`).

Heavy imports (torch, transformers, trl) happen only when a trainer name is used, so
``import cobarl.train`` stays cheap for the CLI's ``--help`` and for config handling.
"""

from cobarl.train.config import TrainConfig

__all__ = ["AdaptiveGRPOConfig", "AdaptiveGRPOTrainer", "PromptBatchSampler", "TrainConfig", "main", "run"]


def __getattr__(name: str):
    if name in ("AdaptiveGRPOConfig", "AdaptiveGRPOTrainer", "PromptBatchSampler"):
        from cobarl.train import trainer

        return getattr(trainer, name)
    if name == "run":
        from cobarl.train.run import run

        return run
    if name == "main":
        from cobarl.train.cli import main

        return main
    raise AttributeError(f"module 'cobarl.train' has no attribute {name!r}")
