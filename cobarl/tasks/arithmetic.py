"""Synthetic integer-arithmetic prompts with graded difficulty and exact answers.

This is the embedded default task of ``cobarl train``: seedable, verifiable by exact
match, and short enough for a character-level model on CPU. Difficulty levels:

Every operand is one digit and every operator ``+`` or ``-``; a level is the number of
operands and the sign of the result:

=====  ===================================  ===================
level  form                                 example
=====  ===================================  ===================
0      two operands, result >= 0            ``3+5=`` -> ``8``
1      three operands, result >= 0          ``7-2+4=`` -> ``9``
2      four operands, result >= 0           ``8-3+6-1=`` -> ``10``
3      two or three operands, one ``-``,    ``2+3-9=`` -> ``-4``
       result < 0
4      three operands, two ``-``,           ``1-8-7=`` -> ``-14``
       result < 0
=====  ===================================  ===================

Levels 3 and 4 are where the default model's warm-start teaches a systematic mistake,
``sign_dropped`` (the magnitude without its minus sign), so RL has a rule to correct.

Held-out prompts are chosen by a hash of the prompt text, not by the seed, so every
train list and every eval list built here are disjoint, whatever their seeds and sizes
(the warm-start model and the RL run may draw their train lists with different seeds).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

LEVELS: tuple[int, ...] = (0, 1, 2, 3, 4)
"""All difficulty levels, easiest first."""

EVAL_FRACTION_DENOM = 4
"""One prompt in ``EVAL_FRACTION_DENOM`` (by CRC32 of its text) belongs to the eval pool."""

MAX_ANSWER_CHARS = 3
"""Longest answer any level produces (``-18`` .. ``36``); generation needs this + 1 EOS token."""

Split = Literal["train", "eval"]


@dataclass(frozen=True)
class Problem:
    """One arithmetic prompt and its verified answer."""

    prompt_id: int
    """Index of the problem, unique within one ``make_problems`` / ``make_splits`` call."""
    prompt: str
    """Prompt text, e.g. ``"12+7="``; the completion is expected to be the answer then EOS."""
    answer: str
    """Exact expected answer, e.g. ``"19"`` (a leading ``-`` for negatives)."""
    difficulty: int
    """Difficulty level (0 = easiest): a level of ``LEVELS`` here, a family index in task v4."""
    family: int | None = None
    """Family of a task made of families (task v4), the unit ``cobarl probe`` splits; None otherwise."""


def _signed_sum(
    rng: random.Random, operands: Sequence[int], negative: bool, minuses: Sequence[int] | None = None
) -> tuple[str, int]:
    """``d1 o d2 o ... =`` over one-digit operands, each ``o`` drawn from ``+ -``, redrawn until
    the value has the wanted sign (``< 0`` when ``negative``, else ``>= 0``) and, if given, the
    number of ``-`` operators is in ``minuses``."""
    while True:
        n = rng.choice(operands)
        digits = [rng.randint(0, 9) for _ in range(n)]
        ops = [rng.choice("+-") for _ in range(n - 1)]
        value = digits[0] + sum(d if o == "+" else -d for o, d in zip(ops, digits[1:]))
        if (value < 0) == negative and (minuses is None or ops.count("-") in minuses):
            text = str(digits[0]) + "".join(o + str(d) for o, d in zip(ops, digits[1:]))
            return text + "=", value


def _level0(rng: random.Random) -> tuple[str, int]:
    return _signed_sum(rng, (2,), negative=False)


def _level1(rng: random.Random) -> tuple[str, int]:
    return _signed_sum(rng, (3,), negative=False)


def _level2(rng: random.Random) -> tuple[str, int]:
    return _signed_sum(rng, (4,), negative=False)


def _level3(rng: random.Random) -> tuple[str, int]:
    return _signed_sum(rng, (2, 3), negative=True, minuses=(1,))


def _level4(rng: random.Random) -> tuple[str, int]:
    return _signed_sum(rng, (3,), negative=True, minuses=(2,))


_GENERATORS: dict[int, Callable[[random.Random], tuple[str, int]]] = {
    0: _level0,
    1: _level1,
    2: _level2,
    3: _level3,
    4: _level4,
}


def is_eval_prompt(prompt: str) -> bool:
    """Whether ``prompt`` belongs to the held-out eval pool (a fixed ~25% of all prompts).

    >>> is_eval_prompt("3+5=") in (True, False)
    True
    """
    # CRC32 rather than hash(): stable across processes and PYTHONHASHSEED.
    return zlib.crc32(prompt.encode()) % EVAL_FRACTION_DENOM == 0


def _draw_level(
    level: int, n: int, rng: random.Random, split: Split | None, seen: set[str]
) -> list[tuple[str, str]]:
    """Draw up to ``n`` new unique (prompt, answer) pairs of one level; fewer if it runs dry."""
    gen = _GENERATORS[level]
    out: list[tuple[str, str]] = []
    # Rejection sampling; level 0 has only ~155 prompts, so cap the attempts instead of
    # enumerating, and let the caller move the shortfall to other levels.
    attempts, max_attempts = 0, 200 * max(n, 1) + 2000
    while len(out) < n and attempts < max_attempts:
        attempts += 1
        prompt, value = gen(rng)
        if prompt in seen:
            continue
        if split is not None and is_eval_prompt(prompt) != (split == "eval"):
            continue
        seen.add(prompt)
        out.append((prompt, str(value)))
    return out


def make_problems(
    n: int,
    *,
    seed: int,
    levels: Sequence[int] = LEVELS,
    split: Split | None = None,
    start_id: int = 0,
    exclude: Iterable[str] = (),
) -> list[Problem]:
    """Draw ``n`` distinct arithmetic problems, balanced across ``levels``, in shuffled order.

    Args:
        n: number of problems.
        seed: RNG seed; the same arguments always give the same list.
        levels: difficulty levels to draw from (see module docstring).
        split: ``"train"`` or ``"eval"`` to draw only from that pool (see ``is_eval_prompt``);
            ``None`` draws from both.
        start_id: ``prompt_id`` of the first problem; ids are ``start_id .. start_id + n - 1``.
        exclude: prompts not to draw (another split's), so two calls give disjoint lists.

    Levels get about ``n / len(levels)`` problems each; a level that runs out of distinct
    prompts (level 0 has 155: ~116 train, ~39 eval; level 3 has 720) has its shortfall
    shared by the others.

    Raises:
        ValueError: unknown level, or ``n`` exceeds what the levels can supply.
    """
    levels = tuple(levels)
    unknown = [lv for lv in levels if lv not in _GENERATORS]
    if unknown or not levels:
        raise ValueError(f"levels must be a non-empty subset of {LEVELS}, got {levels}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seen: set[str] = set(exclude)
    drawn: list[tuple[str, str, int]] = []
    # A string seed is hashed with SHA-512 by `random`, so it is stable across runs.
    rngs = {lv: random.Random(f"cobarl-arith-{seed}-{lv}") for lv in levels}
    open_levels = list(levels)
    # Each pass shares what is still missing evenly over the levels not yet run dry, so a
    # small level's shortfall is spread over the others.
    while len(drawn) < n and open_levels:
        for level in list(open_levels):
            missing, left = n - len(drawn), len(open_levels) - open_levels.index(level)
            quota = missing // left + (1 if missing % left else 0)
            pairs = _draw_level(level, quota, rngs[level], split, seen)
            if len(pairs) < quota:
                open_levels.remove(level)
            drawn.extend((p, a, level) for p, a in pairs)
    if len(drawn) < n:
        raise ValueError(f"could only draw {len(drawn)} distinct problems of levels {levels}, asked {n}")
    random.Random(f"cobarl-arith-shuffle-{seed}").shuffle(drawn)
    return [
        Problem(prompt_id=start_id + i, prompt=p, answer=a, difficulty=lv)
        for i, (p, a, lv) in enumerate(drawn)
    ]


def sign_dropped(answer: str) -> str:
    """The systematic mistake of the default warm-start: a negative answer without its minus sign.

    A rule, not noise: the same for every prompt of a kind, and it changes only the first token,
    so RL that rewards the correct samples flips one shared decision ("a negative result starts
    with ``-``"), which carries over to prompts it never trained on. Non-negative answers are
    returned unchanged (there is nothing to drop).

    >>> sign_dropped("-16"), sign_dropped("35")
    ('16', '35')
    """
    return answer[1:] if answer.startswith("-") else answer


def make_splits(
    n_train: int, n_eval: int, *, seed: int, levels: Sequence[int] = LEVELS
) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train and held-out eval lists (train ids ``0..n_train-1``, eval ids after).

    Disjoint by prompt text for any seeds and sizes, since the pools are fixed by hash.

    >>> train, held_out = make_splits(20, 10, seed=0)
    >>> not {p.prompt for p in train} & {p.prompt for p in held_out}
    True
    """
    train = make_problems(n_train, seed=seed, levels=levels, split="train")
    held_out = make_problems(n_eval, seed=seed, levels=levels, split="eval", start_id=n_train)
    return train, held_out


def make_validation(held_out: Sequence[Problem], n: int, *, seed: int, levels: Sequence[int] = LEVELS) -> list[Problem]:
    """A validation list from the eval pool, disjoint from ``held_out`` (ids after its last), so
    settings can be chosen without looking at held-out; adding it changes neither other split.

    >>> train, held_out = make_splits(20, 10, seed=0)
    >>> val = make_validation(held_out, 10, seed=0)
    >>> not {p.prompt for p in val} & {p.prompt for p in train + held_out}, val[0].prompt_id >= 30
    (True, True)
    """
    start = max((p.prompt_id for p in held_out), default=-1) + 1
    return make_problems(n, seed=seed, levels=levels, split="eval", start_id=start, exclude=(p.prompt for p in held_out))
