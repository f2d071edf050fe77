"""Loading a policy: a local ``save_pretrained`` folder, a hub name, or the embedded tiny model.

Shared by ``cobarl train`` and ``cobarl eval``, so both find and load models the same way.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("COBARL_CACHE", Path.home() / ".cache" / "cobarl"))


def resolve_model_path(model: str | None, *, seed: int = 0, task: str | None = None) -> str:
    """Local path or hub name of the policy; ``None`` builds (once) and caches the tiny model of the
    embedded ``task`` (default: the default task)."""
    if model is None:
        from cobarl.models.tiny import ensure_default_model
        from cobarl.tasks.embedded import DEFAULT_TASK

        return str(ensure_default_model(cache_dir(), seed=seed, task=task or DEFAULT_TASK))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model path {path} has no config.json; expected a save_pretrained directory")
        return str(path)
    looks_local = model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or model.endswith("/")
    if looks_local:
        raise FileNotFoundError(f"model path does not exist: {path}")
    return model  # a hub name; from_pretrained reports whether it can be fetched


def load_model(name_or_path: str):
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
