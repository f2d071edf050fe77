"""Where math rows come from: local ``.parquet``/``.jsonl``/``.json`` files and the Hugging Face hub.

Rows are plain dicts, as stored; `cobarl.data.math` maps them to `MathProblem` records.
``BENCHMARKS`` names the evaluation benchmarks (and DAPO-Math-17K) by their hub repository, split
and layout, so ``load_math("aime24")`` can fetch them when the network is up.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".parquet", ".jsonl", ".json")


# --- hub benchmarks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubSpec:
    repo: str
    split: str
    layout: str
    configs: tuple[str | None, ...] = (None,)  # several configs are concatenated (AIME25 I + II)


BENCHMARKS: dict[str, HubSpec] = {
    "dapo-math-17k": HubSpec("BytedTsinghua-SIA/DAPO-Math-17k", "train", "dapo"),
    "math500": HubSpec("HuggingFaceH4/MATH-500", "test", "math500"),
    "aime24": HubSpec("HuggingFaceH4/aime_2024", "train", "aime24"),
    "aime25": HubSpec("opencompass/AIME2025", "test", "aime25", ("AIME2025-I", "AIME2025-II")),
    "amc23": HubSpec("math-ai/amc23", "test", "amc23"),
    "olympiadbench": HubSpec("Hothan/OlympiadBench", "train", "olympiadbench", ("OE_TO_maths_en_COMP",)),
    "minerva": HubSpec("math-ai/minervamath", "test", "minerva"),
}
"""Benchmark names `load_math` fetches from the Hugging Face hub (when the network is up)."""


# --- files and the hub -----------------------------------------------------------------------------


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a local ``.parquet``, ``.jsonl`` or ``.json`` (a list, or JSON lines) file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"dataset {path}: unsupported format {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"dataset {path}, line {lineno}: not valid JSON ({e.msg})") from None
    return rows


def hub_available(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub looks reachable (offline env vars set -> False, no request made)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint:
        host = re.sub(r"^https?://", "", endpoint).split("/")[0].split(":")[0]
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # DNS lookups ignore the socket timeout; a daemon thread bounds the whole probe.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


def load_hub_rows(repo: str, *, split: str, configs: Sequence[str | None] = (None,)) -> list[dict]:
    """Rows of a hub dataset (all ``configs`` concatenated); a clear error when the hub is unreachable."""
    if not hub_available():
        raise ConnectionError(
            f"dataset {repo!r} is on the Hugging Face hub, which is unreachable (offline, or HF_HUB_OFFLINE / "
            "HF_DATASETS_OFFLINE set). Download it where a network is available "
            f"(datasets.load_dataset({repo!r}).to_parquet(...)) and pass the local .parquet/.jsonl file instead."
        )
    from datasets import load_dataset

    rows: list[dict] = []
    for config in configs:
        rows.extend(load_dataset(repo, config, split=split).to_list())
    return rows
