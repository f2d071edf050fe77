"""Math RLVR datasets: one record type for DAPO-Math-17K and the evaluation benchmarks.

Every loader returns a list of `MathProblem` (id, prompt, answer, source, difficulty), whatever
the layout it read::

    load_math("dapo-math-17k.parquet")            # local file, layout detected from its fields
    load_math("aime24.jsonl", layout="aime24")    # local file, layout named
    load_math("math500")                          # a benchmark name: fetched from the hub (network)
    load_math("hf:HuggingFaceH4/MATH-500", split="test")

Layouts (hub field names, see ``LAYOUTS``):

============== ======================================================================
dapo           ``prompt`` (chat list), ``reward_model.ground_truth``, ``extra_info.index``
math500        ``problem, answer, unique_id, level``
aime24         ``id, problem, answer``
aime25         ``question, answer``
amc23          ``id?, problem|question, answer`` (answers may be floats such as ``27.0``)
olympiadbench  ``id?, question, final_answer`` (a list of ``$...$``), ``is_multiple_answer``
minerva        ``question|problem, answer`` (or only a ``solution`` with a ``\\boxed{}``)
generic        ``id?, problem|question|prompt, answer|ground_truth|solution``
============== ======================================================================

`MathProblem.prompt` is the bare problem statement: the DAPO instruction wrapped around each
DAPO prompt is removed, and `format_prompt` puts back the instruction of your choice
(``template="dapo"`` restores the original DAPO text exactly). DAPO's raw release repeats each
prompt ~100 times; `load_math` de-duplicates by prompt text (first occurrence wins).

Rows come from `cobarl.data.sources` (files, the hub); the instruction around a problem is
`cobarl.data.prompts`' (both re-exported here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cobarl.answers import last_boxed
from cobarl.data.prompts import (  # noqa: F401  (re-exported: cobarl.data.math was one module)
    BOXED_INSTRUCTION,
    DAPO_PREFIX,
    DAPO_SUFFIX,
    TEMPLATES,
    chat_messages,
    format_prompt,
    instruction_text,
)
from cobarl.data.sources import (  # noqa: F401  (re-exported: cobarl.data.math was one module)
    BENCHMARKS,
    SUFFIXES,
    HubSpec,
    hub_available,
    load_hub_rows,
    read_rows,
)


@dataclass(frozen=True)
class MathProblem:
    """One problem with a verifiable answer."""

    id: str  # unique within its source, e.g. "aime24-60" or the DAPO extra_info.index
    prompt: str  # bare problem statement (no instruction, no chat template)
    answer: str  # ground truth as LaTeX-ish text, e.g. "\\frac{14}{3}" or "3, 5"
    source: str  # benchmark or dataset name, e.g. "math500", "dapo"
    difficulty: int | None = None  # e.g. MATH level 1..5 when the source has one
    raw_prompt: Any = None  # the row's own 'prompt' field as stored (string or chat list), if it had one


# --- row -> MathProblem ----------------------------------------------------------------------------


def _first(row: dict, *keys: str) -> Any:
    for key in keys:
        if row.get(key) is not None:
            return row[key]
    return None


def _answer_text(value: Any) -> str | None:
    """Ground truth -> string; integral floats lose their ``.0`` (AMC23 stores ``27.0``)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        parts = [_answer_text(v) for v in value]
        return ", ".join(p for p in parts if p)
    text = str(value).strip()
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text


def strip_dapo_wrapper(text: str) -> str:
    """The bare problem of a DAPO prompt (its instruction prefix and reminder suffix removed)."""
    text = text.strip()
    if text.startswith(DAPO_PREFIX.strip()[:40]):
        _, sep, body = text.partition("\n\n")
        text = body if sep else text
    if DAPO_SUFFIX.strip() in text:
        text = text.split(DAPO_SUFFIX.strip(), 1)[0]
    return text.strip()


def _prompt_text(prompt: Any, where: str) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt):
        users = [m for m in prompt if m.get("role", "user") == "user"]
        return str((users or list(prompt))[-1]["content"])
    raise ValueError(f"{where}: the prompt must be a string or a list of {{role, content}} messages, got {prompt!r:.80}")


def _row_dapo(row: dict, i: int, where: str) -> tuple[str | None, str, Any]:
    rm = row.get("reward_model")
    answer = rm.get("ground_truth") if isinstance(rm, dict) else None
    if answer is None:
        answer = _first(row, "answer", "ground_truth")
    extra = row.get("extra_info")
    rid = extra.get("index") if isinstance(extra, dict) else None
    prompt = row.get("prompt")
    if prompt is None:
        raise ValueError(f"{where}: missing field 'prompt' (found fields: {', '.join(sorted(row))})")
    return (None if rid is None else str(rid)), strip_dapo_wrapper(_prompt_text(prompt, where)), answer


def _row_generic(row: dict, i: int, where: str) -> tuple[str | None, str, Any]:
    prompt = _first(row, "problem", "question", "prompt", "Problem", "Question")
    if prompt is None:
        raise ValueError(
            f"{where}: missing the problem text ('problem', 'question' or 'prompt'); found fields: {', '.join(sorted(row))}"
        )
    answer = _first(row, "answer", "final_answer", "ground_truth", "Answer")
    if answer is None and isinstance(row.get("reward_model"), dict):
        answer = row["reward_model"].get("ground_truth")
    if answer is None:
        solution = row.get("solution")
        if isinstance(solution, (list, tuple)) and solution:
            solution = solution[-1]
        answer = last_boxed(solution) if isinstance(solution, str) else None
    rid = _first(row, "id", "unique_id", "idx", "index", "ID")
    return (None if rid is None else str(rid)), _prompt_text(prompt, where), answer


Mapper = Callable[[dict, int, str], tuple[str | None, str, Any]]
LAYOUTS: dict[str, Mapper] = {
    "dapo": _row_dapo,
    "math500": _row_generic,
    "aime24": _row_generic,
    "aime25": _row_generic,
    "amc23": _row_generic,
    "olympiadbench": _row_generic,  # final_answer (a list) is joined with ", "
    "minerva": _row_generic,
    "generic": _row_generic,
}
"""Layout name -> row mapper ``(row, index, where) -> (id or None, prompt, raw answer)``."""


def detect_layout(row: dict) -> str:
    """Guess a layout from one row's fields (``dapo``, ``olympiadbench``, ``math500`` or ``generic``)."""
    if isinstance(row.get("reward_model"), dict) or isinstance(row.get("prompt"), (list, tuple)):
        return "dapo"
    if "final_answer" in row:
        return "olympiadbench"
    if "unique_id" in row and "level" in row:
        return "math500"
    return "generic"


def _difficulty(row: dict) -> int | None:
    level = row.get("level", row.get("difficulty"))
    if isinstance(level, bool):
        return None
    if isinstance(level, int):
        return level
    if isinstance(level, str):
        m = re.search(r"\d+", level)  # MATH's raw release writes "Level 5"
        return int(m.group()) if m else None
    return None


def prompt_key(prompt: str) -> str:
    """What makes two prompts the same one (de-duplication, held-out checks): their text, whitespace runs as one space."""
    return " ".join(prompt.split())


def rows_to_problems(
    rows: Iterable[dict],
    *,
    layout: str = "auto",
    source: str = "generic",
    dedupe: bool = True,
    limit: int | None = None,
    where: str = "dataset",
) -> list[MathProblem]:
    """Map raw rows (dicts in one of ``LAYOUTS``) to `MathProblem` records.

    Args:
        rows: dicts as read from a file or a hub dataset.
        layout: a key of ``LAYOUTS`` or ``"auto"`` (detected from the first row).
        source: the records' ``source``; also the id prefix of rows without an id.
        dedupe: drop rows whose prompt text was already seen (first occurrence wins).
        limit: stop after this many (unique) problems.
        where: names the data in error messages.

    Raises:
        ValueError: unknown layout, or a row without a problem text or ground truth (naming the row).
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid: auto, {', '.join(sorted(LAYOUTS))}")
    out: list[MathProblem] = []
    seen_prompts: set[str] = set()
    seen_ids: set[str] = set()
    mapper: Mapper | None = None if layout == "auto" else LAYOUTS[layout]
    for i, row in enumerate(rows):
        here = f"{where}, row {i}"
        if not isinstance(row, dict):
            raise ValueError(f"{here}: expected an object, got {type(row).__name__}")
        if mapper is None:
            mapper = LAYOUTS[detect_layout(row)]
        rid, prompt, raw_answer = mapper(row, i, here)
        answer = _answer_text(raw_answer)
        if not answer and raw_answer is not None:
            raise ValueError(f"{here}: the ground truth is blank ({raw_answer!r}); give every row a non-empty answer")
        if not answer:
            raise ValueError(
                f"{here}: missing the ground truth ('answer', 'final_answer', 'reward_model.ground_truth' "
                f"or a \\boxed{{}} in 'solution'); found fields: {', '.join(sorted(row))}"
            )
        key = prompt_key(prompt)
        if dedupe and key in seen_prompts:
            continue
        seen_prompts.add(key)
        rid = rid if rid is not None else f"{source}-{i}"
        if rid in seen_ids:  # ids must stay unique (they key per-problem results); disambiguate
            rid = f"{rid}#{i}"
        seen_ids.add(rid)
        out.append(MathProblem(id=rid, prompt=prompt, answer=answer, source=source, difficulty=_difficulty(row),
                               raw_prompt=row.get("prompt")))
        if limit is not None and len(out) >= limit:
            break
    return out


# --- loading --------------------------------------------------------------------------------------


def load_math(
    source: str | Path,
    *,
    layout: str = "auto",
    name: str | None = None,
    split: str | None = None,
    dedupe: bool = True,
    limit: int | None = None,
) -> list[MathProblem]:
    """Load math problems from a local file, a benchmark name, or ``hf:owner/dataset``.

    Args:
        source: a ``.parquet``/``.jsonl``/``.json`` path; a key of ``BENCHMARKS`` (``"aime24"``; needs the
            network); or ``"hf:owner/name"`` (split ``split`` or ``"train"``, layout detected).
        layout: a key of ``LAYOUTS`` or ``"auto"``; a benchmark name implies its own layout.
        name: the records' ``source`` (defaults: the benchmark name, or the file's stem).
        split: hub split (ignored for local files).
        dedupe: drop repeated prompts (the raw DAPO release repeats each one ~100 times).
        limit: keep at most this many problems.

    Raises:
        FileNotFoundError, ValueError: bad file or rows. ConnectionError: hub source while offline.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.suffix in SUFFIXES or path.exists():
        rows = read_rows(path)
        if not rows:
            raise ValueError(f"dataset {path} has no rows")
        src = name or (layout if layout not in ("auto", "generic") else path.stem)
        return rows_to_problems(rows, layout=layout, source=src, dedupe=dedupe, limit=limit, where=f"dataset {path}")
    key = text.lower().replace("_", "-")
    if key in BENCHMARKS:
        spec = BENCHMARKS[key]
        rows = load_hub_rows(spec.repo, split=split or spec.split, configs=spec.configs)
        return rows_to_problems(rows, layout=spec.layout if layout == "auto" else layout, source=name or key,
                                dedupe=dedupe, limit=limit, where=f"hub dataset {spec.repo}")
    if text.startswith("hf:"):
        repo = text[3:]
        rows = load_hub_rows(repo, split=split or "train")
        return rows_to_problems(rows, layout=layout, source=name or repo.split("/")[-1], dedupe=dedupe, limit=limit,
                                where=f"hub dataset {repo}")
    raise FileNotFoundError(
        f"{text!r} is neither an existing file, a benchmark ({', '.join(BENCHMARKS)}), nor 'hf:owner/dataset'"
    )


def embedded_problems(task: str, size: int = 64, *, seed: int = 0) -> list[MathProblem]:
    """An embedded task's held-out split (``cobarl.tasks.embedded.TASKS``) as `MathProblem` records (source: the task)."""
    from cobarl.tasks.embedded import get_task

    _, held_out = get_task(task).make_splits(0, size, seed=seed)
    return [MathProblem(id=f"{task}-{p.prompt_id}", prompt=p.prompt, answer=str(p.answer), source=task,
                        difficulty=int(p.difficulty)) for p in held_out]


def to_dataset(problems: Sequence[MathProblem], *, template: str = "raw", chat: bool = False,
               system: str | None = None):
    """`MathProblem` records -> the `datasets.Dataset` columns `cobarl train` uses.

    Columns: ``prompt_id`` (0..N-1), ``prompt`` (a string, or a chat list when ``chat``; TRL then applies
    the tokenizer's chat template), ``answer``, ``id``, ``source``, and ``difficulty`` when every record has one.
    """
    from datasets import Dataset

    if template == "as-is":
        prompts: list[Any] = [p.raw_prompt if p.raw_prompt is not None else p.prompt for p in problems]
    else:
        prompts = [chat_messages(p.prompt, template, system=system) if chat else instruction_text(p.prompt, template)
                   for p in problems]
    columns: dict[str, list] = {
        "prompt_id": list(range(len(problems))),
        "prompt": prompts,
        "answer": [p.answer for p in problems],
        "id": [p.id for p in problems],
        "source": [p.source for p in problems],
    }
    if problems and all(p.difficulty is not None for p in problems):
        columns["difficulty"] = [int(p.difficulty) for p in problems]
    return Dataset.from_dict(columns)
