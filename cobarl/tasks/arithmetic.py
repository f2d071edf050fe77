"""Synthetic integer-arithmetic prompts with graded difficulty and exact answers.

This is the embedded default task of ``cobarl train``: seedable, verifiable by exact
match, and short enough for a character-level model on CPU. Difficulty levels:

=====  ===========================================  =================
level  form                                         example
=====  ===========================================  =================
0      one digit +/- one digit (result >= 0)        ``3+5=`` -> ``8``
1      two digits +/- one digit                     ``47-8=`` -> ``39``
2      two digits +/- two digits (may be negative)  ``23-58=`` -> ``-35``
3      two digits * one digit                       ``37*6=`` -> ``222``
4      two digits * one digit +/- two digits        ``37*6-15=`` -> ``207``
=====  ===========================================  =================

Held-out prompts are chosen by a hash of the prompt text, not by the seed, so every
train list and every eval list built here are disjoint, whatever their seeds and sizes
(the warm-start model and the RL run may draw their train lists with different seeds).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

LEVELS: tuple[int, ...] = (0, 1, 2, 3, 4)
"""All difficulty levels, easiest first."""

EVAL_FRACTION_DENOM = 4
"""One prompt in ``EVAL_FRACTION_DENOM`` (by CRC32 of its text) belongs to the eval pool."""

MAX_ANSWER_CHARS = 3
"""Longest answer any level produces (``-89`` .. ``990``); generation needs this + 1 EOS token."""

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
    """Difficulty level in ``LEVELS`` (0 = easiest)."""


def _level0(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        return f"{a}+{b}=", a + b
    a, b = max(a, b), min(a, b)  # keep level 0 free of negative answers
    return f"{a}-{b}=", a - b


def _level1(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(10, 99), rng.randint(0, 9)
    if rng.random() < 0.5:
        return f"{a}+{b}=", a + b
    return f"{a}-{b}=", a - b


def _level2(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if rng.random() < 0.5:
        return f"{a}+{b}=", a + b
    return f"{a}-{b}=", a - b


def _level3(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(10, 99), rng.randint(2, 9)
    return f"{a}*{b}=", a * b


def _level4(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.randint(10, 99), rng.randint(2, 9), rng.randint(10, 99)
    if rng.random() < 0.5:
        return f"{a}*{b}+{c}=", a * b + c
    return f"{a}*{b}-{c}=", a * b - c


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
) -> list[Problem]:
    """Draw ``n`` distinct arithmetic problems, balanced across ``levels``, in shuffled order.

    Args:
        n: number of problems.
        seed: RNG seed; the same arguments always give the same list.
        levels: difficulty levels to draw from (see module docstring).
        split: ``"train"`` or ``"eval"`` to draw only from that pool (see ``is_eval_prompt``);
            ``None`` draws from both.
        start_id: ``prompt_id`` of the first problem; ids are ``start_id .. start_id + n - 1``.

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
    seen: set[str] = set()
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


def near_miss(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer: ``answer`` off by one (last digit +/-1, with its carry or borrow).

    The warm-start recipe of the default model replaces a fraction of its labels by these, so the
    starting policy puts part of its mass on a generic, prompt-independent mistake -- the kind of
    unreliability RL on verifiable rewards removes -- instead of only on memorised answers.

    >>> near_miss("19", random.Random(0)) in ("18", "20")
    True
    """
    return str(int(answer) + rng.choice((-1, 1)))


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
