"""Arithmetic task generation and the exact-match verifier."""

from collections import Counter

import pytest

from cobarl.rewards import exact_match_reward
from cobarl.tasks.arithmetic import sign_dropped
from cobarl.tasks import LEVELS, MAX_ANSWER_CHARS, Problem, is_eval_prompt, make_problems, make_splits


def _value(prompt: str) -> int:
    # Prompts use only digits and + - *, so Python's own precedence is the task's precedence.
    assert set(prompt) <= set("0123456789+-*=") and prompt.endswith("=")
    return eval(prompt[:-1])  # noqa: S307 - trusted, checked above


def test_same_seed_same_problems_other_seed_differs():
    assert make_problems(100, seed=3) == make_problems(100, seed=3)
    assert make_problems(100, seed=3) != make_problems(100, seed=4)


def test_answers_are_correct_and_short():
    problems = make_problems(500, seed=0)
    for p in problems:
        assert isinstance(p, Problem)
        assert p.answer == str(_value(p.prompt))
        assert len(p.answer) <= MAX_ANSWER_CHARS


def test_no_duplicates_balanced_levels_and_ids():
    problems = make_problems(500, seed=1)
    assert len({p.prompt for p in problems}) == 500
    assert [p.prompt_id for p in problems] == list(range(500))
    assert Counter(p.difficulty for p in problems) == {lv: 100 for lv in LEVELS}


def test_small_level_runs_dry_and_shortfall_moves_to_later_levels():
    # Level 0 has only 155 distinct prompts (100 sums, 55 non-negative differences).
    problems = make_problems(1000, seed=0, levels=(0, 1))
    counts = Counter(p.difficulty for p in problems)
    assert counts[0] == 155 and counts[1] == 845
    with pytest.raises(ValueError, match="distinct"):
        make_problems(200, seed=0, levels=(0,))
    with pytest.raises(ValueError, match="levels"):
        make_problems(10, seed=0, levels=(9,))


def test_splits_are_disjoint_for_any_seeds_and_sizes():
    train, held_out = make_splits(400, 100, seed=0)
    assert len(train) == 400 and len(held_out) == 100
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert {p.prompt_id for p in held_out} == set(range(400, 500))
    assert all(not is_eval_prompt(p.prompt) for p in train)
    assert all(is_eval_prompt(p.prompt) for p in held_out)
    # A train list drawn with another seed still never meets the held-out list.
    other_train = make_problems(600, seed=7, split="train")
    assert not {p.prompt for p in other_train} & {p.prompt for p in held_out}
    assert {p.difficulty for p in held_out} == set(LEVELS)


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("19", "19", 1.0),
        (" 19 ", "19", 1.0),
        ("19\n20", "19", 1.0),
        ("\n19", "19", 1.0),
        ("19<eos><pad><pad>", "19", 1.0),
        ("-35", "-35", 1.0),
        ("190", "19", 0.0),
        ("1 9", "19", 0.0),
        ("35", "-35", 0.0),
        ("", "19", 0.0),
        ("<eos>19", "19", 0.0),
    ],
)
def test_exact_match_reward(completion, answer, expected):
    assert exact_match_reward(completion, answer) == expected


def test_levels_have_their_sign():
    # Levels 0-2 never go below 0; levels 3 and 4 are always negative (where the warm-start's
    # systematic mistake applies).
    for p in make_problems(1000, seed=2):
        assert (int(p.answer) < 0) == (p.difficulty in (3, 4)), p


def test_sign_dropped_is_the_magnitude_and_only_for_negatives():
    for p in make_problems(500, seed=2):
        wrong = sign_dropped(p.answer)
        assert wrong == str(abs(int(p.answer)))
        assert (wrong != p.answer) == (p.difficulty in (3, 4))
        assert len(wrong) <= MAX_ANSWER_CHARS
