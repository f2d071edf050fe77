"""What a run was trained and evaluated on, by content: a fingerprint of its train, held-out and
validation prompts, saved next to ``config.yaml`` so ``--resume`` notices changed data.

``config.yaml`` records the data's path, not its rows: a file shuffled, edited or extended between
an interrupt and ``--resume`` would silently give the held-out split other prompts (some of them
trained on), keep the old split's "before RL" accuracy and move per-prompt statistics (keyed by row
id) onto other prompts. Each split is kept as one short hash per row, of its prompt and of its answer,
so a change is described by what changed (rows reordered, answers edited, rows added or removed)
without storing the data itself.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

DATA_FILE = "data_fingerprint.json"
FORMAT = "cobarl.data-fingerprint"
SPLITS = ("train", "held-out", "validation")


def _hash(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]  # 48 bits: no collision in a million rows


def split_fingerprint(dataset) -> dict[str, list[str]] | None:
    """Per-row hashes of a split's prompts and answers, in row order (None for an absent split)."""
    if dataset is None:
        return None
    return {"prompts": [_hash(p) for p in dataset["prompt"]], "answers": [_hash(str(a)) for a in dataset["answer"]]}


def data_fingerprint(train_ds, eval_ds, val_ds) -> dict[str, Any]:
    """The fingerprint of a run's three splits (what `DATA_FILE` holds)."""
    return {"format": FORMAT, **{name: split_fingerprint(ds) for name, ds in zip(SPLITS, (train_ds, eval_ds, val_ds))}}


def split_changes(saved: dict[str, list[str]] | None, now: dict[str, list[str]] | None) -> list[str]:
    """How a split changed, in words (empty: the same rows, in the same order, with the same answers)."""
    if saved == now:
        return []
    if saved is None or now is None:
        return ["added" if saved is None else "removed"]
    old, new = saved["prompts"], now["prompts"]
    out = []
    added, removed = Counter(new) - Counter(old), Counter(old) - Counter(new)
    if added or removed:
        out.append(f"{sum(added.values())} row(s) added, {sum(removed.values())} removed ({len(old)} -> {len(new)} rows)")
    elif old != new:
        moved = sum(a != b for a, b in zip(old, new))
        out.append(f"rows reordered ({moved} of {len(old)} rows in another place)")
    answer_of = dict(zip(old, saved["answers"]))
    edited = sum(p in answer_of and answer_of[p] != a for p, a in zip(new, now["answers"]))
    if edited:
        out.append(f"{edited} answer(s) edited")
    # never "unchanged" when the hashes differ (e.g. an answer edited on a prompt that appears twice)
    return out or ["rows changed"]


def data_changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, list[str]]:
    """Split name -> how it changed, for the splits that changed."""
    changes = {name: split_changes(saved.get(name), now.get(name)) for name in SPLITS}
    return {name: words for name, words in changes.items() if words}
