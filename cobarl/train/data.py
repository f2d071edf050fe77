"""Training data for `cobarl train`: the embedded arithmetic task or a local verl/DAPO-layout file.

Every loader returns a `datasets.Dataset` with three columns the trainer relies on:

- ``prompt``: a string, or a chat list of ``{"role", "content"}`` messages (TRL applies the template);
- ``answer``: the ground truth as a string (what the verifier compares against);
- ``prompt_id``: a unique int id, the group id of the prompt's rollouts;

plus ``difficulty`` when the source has one. Files in the verl/DAPO layout keep the ground truth in
``reward_model.ground_truth``; a flat ``answer`` (or ``ground_truth``) column is accepted too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from cobarl.data.math import read_rows


def problems_to_dataset(problems: Sequence[Any]) -> Dataset:
    """`cobarl.tasks.Problem` objects (prompt_id, prompt, answer, difficulty) -> Dataset."""
    return Dataset.from_dict(
        {
            "prompt_id": [int(p.prompt_id) for p in problems],
            "prompt": [p.prompt for p in problems],
            "answer": [str(p.answer) for p in problems],
            "difficulty": [int(p.difficulty) for p in problems],
        }
    )


def embedded_datasets(*, train_size: int, eval_size: int, seed: int) -> tuple[Dataset, Dataset]:
    """The embedded arithmetic task: disjoint train and held-out splits."""
    from cobarl.tasks.arithmetic import make_splits

    train, held_out = make_splits(train_size, eval_size, seed=seed)
    return problems_to_dataset(train), problems_to_dataset(held_out)


def _ground_truth(row: dict) -> Any:
    rm = row.get("reward_model")
    if isinstance(rm, dict) and rm.get("ground_truth") is not None:
        return rm["ground_truth"]
    for key in ("answer", "ground_truth"):
        if row.get(key) is not None:
            return row[key]
    return None


def _check_prompt(prompt: Any, where: str) -> Any:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    raise ValueError(f"{where}: field 'prompt' must be a string or a list of {{role, content}} messages, got {prompt!r:.80}")


def load_dataset_file(path: str | Path, *, limit: int | None = None) -> Dataset:
    """Read a local .parquet/.jsonl in the verl/DAPO layout into the trainer's columns.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a row misses ``prompt`` or the ground truth (the message names the field and row),
            or the file is empty.
    """
    path = Path(path).expanduser()
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"dataset {path} has no rows")
    prompts, answers, difficulty = [], [], []
    for i, row in enumerate(rows):
        where = f"dataset {path}, row {i}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        if row.get("prompt") is None:
            raise ValueError(f"{where}: missing required field 'prompt' (found fields: {', '.join(sorted(row))})")
        answer = _ground_truth(row)
        if answer is None:
            raise ValueError(
                f"{where}: missing required field 'reward_model.ground_truth' (or 'answer'); "
                f"found fields: {', '.join(sorted(row))}"
            )
        prompts.append(_check_prompt(row["prompt"], where))
        answers.append(answer if isinstance(answer, str) else json.dumps(answer) if isinstance(answer, (list, dict)) else str(answer))
        difficulty.append(row.get("difficulty"))
        if limit is not None and len(prompts) >= limit:
            break
    if len({isinstance(p, str) for p in prompts}) > 1:
        first_chat = next(i for i, p in enumerate(prompts) if not isinstance(p, str))
        first_str = next(i for i, p in enumerate(prompts) if isinstance(p, str))
        raise ValueError(
            f"dataset {path}: field 'prompt' mixes strings (row {first_str}) and chat lists (row {first_chat}); "
            "use one form for every row"
        )
    columns: dict[str, list] = {"prompt_id": list(range(len(prompts))), "prompt": prompts, "answer": answers}
    if all(isinstance(d, int) for d in difficulty):
        columns["difficulty"] = difficulty
    return Dataset.from_dict(columns)


def split_held_out(dataset: Dataset, eval_size: int) -> tuple[Dataset, Dataset]:
    """Hold out the last ``eval_size`` rows (at most half the data) for before/after accuracy."""
    n_eval = min(eval_size, len(dataset) // 2)
    if n_eval < 1:
        raise ValueError(f"dataset has {len(dataset)} rows; need at least 2 to hold some out for evaluation")
    n_train = len(dataset) - n_eval
    return dataset.select(range(n_train)), dataset.select(range(n_train, len(dataset)))
