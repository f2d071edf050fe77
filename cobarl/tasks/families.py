"""Task v4, the embedded default: 24 problem families, each with its own answer convention and its own
habitual mistake, so that where the rollouts go decides which families RL fixes.

A prompt is a family tag (``a`` .. ``x``), a 6-digit number and ``=``; the answer is the family's
marker followed by one digit of the number, the digit at the family's place::

    b390801=   ->  K0      (family b reads place 5 and answers with the marker K)

The warm-start teaches every family its place (the model learns it on every label) but, for family
k, writes the family's *mistaken* marker instead of the correct one on a share ``MISTAKE_RATES[k]``
of the labels, like a base model that knows the content of an answer but habitually writes it in
the wrong form for one kind of question (the units, the sign convention, the boxed format). Each
family has its own pair of markers, shared with no other family, so a fix learned on one family
carries over to its held-out prompts and hardly to other families: a family improves in proportion
to the rollouts its own prompts get. Why this design, what was tried and what it measured:
``docs/task-v4.md``.

Held-out prompts are chosen by a hash of the prompt text (one in ``EVAL_FRACTION_DENOM``), as in
task v3, so every train and eval list built here is disjoint whatever the seeds and sizes.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from cobarl.tasks.arithmetic import EVAL_FRACTION_DENOM, Problem, Split

TAGS: str = "abcdefghijklmnopqrstuvwx"
"""Family tags, one lowercase letter per family; family k is ``TAGS[k]``."""

DIGITS = 6
"""Digits of the number in each prompt."""

MISTAKE_RATES: tuple[float, ...] = (
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.3, 0.5, 0.75, 0.85, 0.9, 0.92, 0.93, 0.94, 0.95, 0.96, 0.965, 0.97, 0.975, 0.98, 0.985, 0.99, 0.99, 0.995,
)
"""Per family, the share of warm-start labels that carry the mistaken marker. Families are ordered
easiest first, so a family's index is its difficulty. The warm-start's pass rate follows
1 - rate closely (measured: README), so six families start solved, two in between and sixteen in
the range where a few percent become tens of percent with enough rollouts."""

CORRECT_MARKERS: str = "KW~CRV'G|JZYMFB>?X}`OU];"
"""Per family, the first character of a correct answer."""

MISTAKEN_MARKERS: str = "S_:I%#Q&<[@APT^\"DNL${HE!"
"""Per family, the first character of the habitual mistake (every marker appears once in all)."""

PLACES: tuple[int, ...] = (2, 1, 5, 1, 0, 4, 1, 2, 5, 4, 0, 3, 1, 4, 3, 4, 3, 2, 0, 5, 1, 0, 2, 4)
"""Per family, the 0-based position of the digit the answer copies."""

CHARS: str = "0123456789=" + TAGS + CORRECT_MARKERS + MISTAKEN_MARKERS
"""Every character a prompt or an answer of this task can hold (the tiny model's vocabulary)."""

MAX_ANSWER_CHARS = 2
"""Marker and digit; generation needs this + 1 EOS token."""

FAMILIES: tuple[int, ...] = tuple(range(len(TAGS)))

_MISTAKE = dict(zip(CORRECT_MARKERS, MISTAKEN_MARKERS))


def _check_tables() -> None:
    n = len(TAGS)
    assert len(MISTAKE_RATES) == len(CORRECT_MARKERS) == len(MISTAKEN_MARKERS) == len(PLACES) == n
    assert len(set(CORRECT_MARKERS + MISTAKEN_MARKERS)) == 2 * n, "a marker is shared by two families"
    assert not set(CORRECT_MARKERS + MISTAKEN_MARKERS) & set("0123456789=" + TAGS)
    assert list(MISTAKE_RATES) == sorted(MISTAKE_RATES) and all(0 <= q < 1 for q in MISTAKE_RATES)


@dataclass(frozen=True)
class Regime:
    """Which world a families task is: how many 0/16 prompts sampling can reach, and of which kind the
    unreachable ones are. Task v4 is ``Regime()``; the other presets (``cobarl.tasks.embedded.TASKS``)
    turn some hard families unreachable and leave the prompts, places and markers of every family
    as they are, so a preset changes labels and warm-start only. Why and what each measured:
    ``docs/task-regimes.md``.

    Attributes:
        mistake_rates: per family, the warm-start's share of mistaken labels (v4's table by default).
        beyond_reach: families the warm-start labels with the mistaken marker every time (rate 1), so
            the correct marker is never in the model's training data and practically never sampled:
            a problem beyond the model's skill within any budget a run can spend.
        wrong_reference: families whose stored answer is not the one the rule gives (the digit shifted
            by 5), like a mislabelled math answer: even a model that follows the rule perfectly scores 0,
            on train and held-out prompts alike. The warm-start still teaches the rule with the
            family's mistake rate (the model is right; the data is not).
    """

    mistake_rates: tuple[float, ...] = MISTAKE_RATES
    beyond_reach: frozenset[int] = frozenset()
    wrong_reference: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if len(self.mistake_rates) != len(TAGS) or not all(0 <= q < 1 for q in self.mistake_rates):
            raise ValueError(f"mistake_rates: one rate in [0, 1) per family ({len(TAGS)}), got {self.mistake_rates}")
        for name in ("beyond_reach", "wrong_reference"):
            if not set(getattr(self, name)) <= set(range(len(TAGS))):
                raise ValueError(f"{name}: family indices in 0..{len(TAGS) - 1}, got {sorted(getattr(self, name))}")
        if self.beyond_reach & self.wrong_reference:
            raise ValueError(f"families {sorted(self.beyond_reach & self.wrong_reference)} are both beyond reach "
                             "and wrong-reference; a family is one kind")

    @property
    def warm_start_rates(self) -> dict[int, float]:
        """Per family, the warm-start's mistake rate (1 for a family beyond reach)."""
        return {k: 1.0 if k in self.beyond_reach else q for k, q in enumerate(self.mistake_rates)}

    @property
    def unreachable(self) -> frozenset[int]:
        """Families no sampling solves (either kind)."""
        return self.beyond_reach | self.wrong_reference

    def describe(self) -> dict:
        return {"beyond_reach": sorted(self.beyond_reach), "wrong_reference": sorted(self.wrong_reference)}


_check_tables()


def is_eval_prompt(prompt: str) -> bool:
    """Whether ``prompt`` belongs to the held-out pool (CRC32: stable across processes and seeds)."""
    return zlib.crc32(prompt.encode()) % EVAL_FRACTION_DENOM == 0


def answer_for(family: int, digits: str) -> str:
    """The correct answer: the family's marker, then the digit at its place.

    >>> answer_for(1, "390801")
    'W9'
    """
    return CORRECT_MARKERS[family] + digits[PLACES[family]]


def wrong_reference(answer: str) -> str:
    """A mislabelled reference: the right marker with the digit shifted by 5 (never the right digit).

    >>> wrong_reference("W9")
    'W4'
    """
    return answer[0] + str((int(answer[1]) + 5) % 10)


def wrong_marker(answer: str) -> str:
    """The family's habitual mistake: the same digit behind the family's mistaken marker (the
    warm-start's ``mistake``; the family is read off the correct marker, which is unique to it).

    >>> wrong_marker("W9")
    '_9'
    """
    return _MISTAKE[answer[0]] + answer[1:]


def make_problems(
    n: int, *, seed: int, split: Split | None = None, start_id: int = 0, exclude: Iterable[str] = (),
    regime: Regime | None = None,
) -> list[Problem]:
    """Draw ``n`` distinct problems, as equal a number per family as ``n`` allows, in shuffled order.

    Args:
        n: number of problems.
        seed: the same arguments always give the same list.
        split: ``"train"`` or ``"eval"`` to draw only from that pool; ``None`` draws from both.
        start_id: ``prompt_id`` of the first problem.
        exclude: prompts not to draw (another split's).
        regime: the stored answers of its ``wrong_reference`` families are mislabelled; ``None`` (and
            the warm-start, which learns the rule) store the rule's answer. The prompts drawn never
            depend on it.

    ``difficulty`` and ``family`` of each problem are its family index (families are ordered by
    their warm-start mistake rate).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seen: set[str] = set(exclude)
    drawn: list[tuple[str, str, int]] = []
    quota = [n // len(TAGS) + (1 if k < n % len(TAGS) else 0) for k in FAMILIES]
    for family in FAMILIES:
        # Each family has its own stream, so adding prompts to one family leaves the others' alone.
        rng = random.Random(f"cobarl-families-{seed}-{family}")
        while quota[family]:  # 10^6 numbers per family: never runs dry at sizes a run can use
            digits = "".join(str(rng.randint(0, 9)) for _ in range(DIGITS))
            prompt = TAGS[family] + digits + "="
            if prompt in seen or (split is not None and is_eval_prompt(prompt) != (split == "eval")):
                continue
            seen.add(prompt)
            drawn.append((prompt, answer_for(family, digits), family))
            quota[family] -= 1
    random.Random(f"cobarl-families-shuffle-{seed}").shuffle(drawn)
    mislabelled = regime.wrong_reference if regime is not None else frozenset()
    return [Problem(prompt_id=start_id + i, prompt=p, answer=wrong_reference(a) if k in mislabelled else a,
                    difficulty=k, family=k)
            for i, (p, a, k) in enumerate(drawn)]


def make_splits(n_train: int, n_eval: int, *, seed: int, regime: Regime | None = None
                ) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train and held-out lists (train ids ``0..n_train-1``, held-out ids after).

    >>> train, held_out = make_splits(48, 24, seed=0)
    >>> not {p.prompt for p in train} & {p.prompt for p in held_out}, sorted({p.family for p in held_out}) == list(FAMILIES)
    (True, True)
    """
    train = make_problems(n_train, seed=seed, split="train", regime=regime)
    return train, make_problems(n_eval, seed=seed, split="eval", start_id=n_train, regime=regime)


def make_validation(held_out: list[Problem], n: int, *, seed: int, regime: Regime | None = None) -> list[Problem]:
    """A validation list from the eval pool, disjoint from ``held_out``, ids after its last."""
    start = max((p.prompt_id for p in held_out), default=-1) + 1
    return make_problems(n, seed=seed, split="eval", start_id=start, exclude=(p.prompt for p in held_out),
                         regime=regime)
