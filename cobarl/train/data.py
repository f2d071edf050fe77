"""Training data for `cobarl train`: an embedded task or a local verl/DAPO-layout file.

Every loader returns a `datasets.Dataset` with three columns the trainer relies on (files go through
:func:`cobarl.data.load_math`, the one dataset path):

- ``prompt``: a string, or a chat list of ``{"role", "content"}`` messages (TRL applies the template);
- ``answer``: the ground truth as a string (what the verifier compares against);
- ``prompt_id``: a unique int id, the group id of the prompt's rollouts;

plus ``difficulty`` when the source has one, and ``family`` for a task made of families (what ``cobarl
probe`` splits). Files in the verl/DAPO layout keep the ground truth in
``reward_model.ground_truth``; a flat ``answer`` (or ``ground_truth``) column is accepted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from cobarl.train.config import TrainConfig


def problems_to_dataset(problems: Sequence[Any]) -> Dataset:
    """`cobarl.tasks.Problem` objects (prompt_id, prompt, answer, difficulty, family) -> Dataset; the
    ``family`` column only for a task made of families."""
    columns = {
        "prompt_id": [int(p.prompt_id) for p in problems],
        "prompt": [p.prompt for p in problems],
        "answer": [str(p.answer) for p in problems],
        "difficulty": [int(p.difficulty) for p in problems],
    }
    if problems and all(getattr(p, "family", None) is not None for p in problems):
        columns["family"] = [int(p.family) for p in problems]
    return Dataset.from_dict(columns)


def embedded_datasets(
    *, train_size: int, eval_size: int, seed: int, validation_size: int = 0, task: str | None = None
) -> tuple[Dataset, Dataset, Dataset | None]:
    """An embedded task (default: the default one): disjoint train, held-out and (``validation_size`` > 0)
    validation splits.

    The validation prompts come from the eval pool after the held-out ones. On ``arith-v3``, with the
    default 512 held-out prompts that pool has no level-0 or level-3 prompts left, so the validation
    split holds levels 1, 2 and 4 only; ``families-v4`` has every family in every split.
    """
    from cobarl.tasks.embedded import DEFAULT_TASK, get_task

    recipe = get_task(task or DEFAULT_TASK)
    train, held_out = recipe.make_splits(train_size, eval_size, seed=seed)
    validation = problems_to_dataset(recipe.make_validation(held_out, validation_size, seed=seed)) if validation_size else None
    return problems_to_dataset(train), problems_to_dataset(held_out), validation


def load_dataset_file(path: str | Path, *, limit: int | None = None) -> Dataset:
    """Read a local .parquet/.jsonl in the verl/DAPO (or a benchmark's) layout into the trainer's columns.

    Goes through :func:`cobarl.data.load_math`, like every other loader: rows repeating a prompt
    are dropped (the raw DAPO-Math-17K release holds each prompt ~100 times, which would split one
    prompt's statistics over ~100 ids and leak training prompts into a held-out split), ids are
    stable (first-occurrence order), and the prompt reaches the model exactly as the file stores it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a row misses the prompt or the ground truth (the message names the field and row),
            the file is empty, or it mixes string and chat prompts.
    """
    from cobarl.data.math import to_dataset

    return to_dataset(load_file_problems(path, limit=limit), template="as-is")


def load_file_problems(path: str | Path, *, limit: int | None = None) -> list:
    """The `MathProblem` records of a local file as `load_dataset_file` reads them (one prompt form per file)."""
    from cobarl.data.math import load_math

    problems = load_math(Path(path).expanduser(), limit=limit)
    kinds = [isinstance(p.raw_prompt if p.raw_prompt is not None else p.prompt, str) for p in problems]
    if len(set(kinds)) > 1:
        raise ValueError(
            f"dataset {path}: field 'prompt' mixes strings (row {kinds.index(True)}) and chat lists "
            f"(row {kinds.index(False)}); use one form for every row"
        )
    return problems


def check_held_out(train: list, held_out: list, config: TrainConfig) -> None:
    """Refuse held-out prompts that are also train prompts (compared as --dataset's de-duplication compares them):
    their accuracy would measure memorisation, not learning."""
    from cobarl.data.math import prompt_key

    trained = {prompt_key(p.prompt) for p in train}
    shared = sum(prompt_key(p.prompt) in trained for p in held_out)
    if shared:
        raise ValueError(
            f"--eval-dataset {config.eval_dataset} shares {shared} of its {len(held_out)} prompts with --dataset "
            f"{config.dataset} (the same text up to whitespace, as --dataset's de-duplication compares them): held-out "
            "prompts must not be trained on. Remove them from one of the files, or leave --eval-dataset out to hold "
            "out the last --eval-size rows of --dataset")


def split_held_out(dataset: Dataset, eval_size: int) -> tuple[Dataset, Dataset]:
    """Hold out the last ``eval_size`` rows (at most half the data) for before/after accuracy."""
    n_eval = min(eval_size, len(dataset) // 2)
    if n_eval < 1:
        raise ValueError(f"dataset has {len(dataset)} rows; need at least 2 to hold some out for evaluation")
    n_train = len(dataset) - n_eval
    return dataset.select(range(n_train)), dataset.select(range(n_train, len(dataset)))


def load_splits(config: TrainConfig):
    """(train, held-out, validation or None): three disjoint splits."""
    if config.dataset is None:
        return embedded_datasets(train_size=config.train_size, eval_size=config.eval_size, seed=config.seed,
                                 validation_size=config.validation_size, task=config.task)
    from cobarl.data.math import to_dataset

    train_problems = load_file_problems(config.dataset)
    train_ds = to_dataset(train_problems, template="as-is")
    if config.eval_dataset is not None:
        eval_problems = load_file_problems(config.eval_dataset, limit=config.eval_size)
        check_held_out(train_problems, eval_problems, config)
        eval_ds = to_dataset(eval_problems, template="as-is")
    else:
        train_ds, eval_ds = split_held_out(train_ds, config.eval_size)
    if not config.validation_size:
        return train_ds, eval_ds, None
    if config.validation_size > len(train_ds) // 2:
        raise ValueError(f"--validation-size {config.validation_size} would take more than half of the "
                         f"{len(train_ds)} training rows of {config.dataset}; pass at most {len(train_ds) // 2}")
    return (train_ds.select(range(len(train_ds) - config.validation_size)), eval_ds,
            train_ds.select(range(len(train_ds) - config.validation_size, len(train_ds))))
