"""Policies: the tiny character-level Qwen2 model of the CPU default run."""

from cobarl.models.tiny import (
    MAX_NEW_TOKENS,
    build_model,
    build_tokenizer,
    ensure_default_model,
    sample_completions,
    warm_start,
)

__all__ = [
    "MAX_NEW_TOKENS",
    "build_model",
    "build_tokenizer",
    "ensure_default_model",
    "sample_completions",
    "warm_start",
]
