"""Task v4 (families): splits, answers, the warm-start's mistake, and the embedded-task registry."""

from __future__ import annotations

import collections

import pytest

from cobarl.tasks import families
from cobarl.tasks.embedded import DEFAULT_TASK, TASKS, get_task


def test_problems_balanced_disjoint_and_answers_exact():
    train, held_out = families.make_splits(480, 240, seed=3)
    assert [p.prompt_id for p in train] == list(range(480)) and held_out[0].prompt_id == 480
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert all(families.is_eval_prompt(p.prompt) for p in held_out)
    assert not any(families.is_eval_prompt(p.prompt) for p in train)
    assert set(collections.Counter(p.family for p in train).values()) == {20}
    for p in train + held_out:
        tag, digits = p.prompt[0], p.prompt[1:-1]
        k = families.TAGS.index(tag)
        assert p.family == p.difficulty == k and p.prompt.endswith("=") and len(digits) == families.DIGITS
        assert p.answer == families.CORRECT_MARKERS[k] + digits[families.PLACES[k]]
        assert set(p.prompt + p.answer) <= set(families.CHARS)


def test_same_seed_same_list_other_seed_other_list():
    a, b = families.make_problems(48, seed=0), families.make_problems(48, seed=0)
    assert a == b and a != families.make_problems(48, seed=1)


def test_validation_is_disjoint_from_train_and_held_out():
    train, held_out = families.make_splits(96, 48, seed=0)
    val = families.make_validation(held_out, 48, seed=0)
    assert not {p.prompt for p in val} & {p.prompt for p in train + held_out}
    assert min(p.prompt_id for p in val) > max(p.prompt_id for p in held_out)


def test_mistake_changes_only_the_marker_and_is_the_family_own():
    for k in families.FAMILIES:
        right = families.answer_for(k, "123456")
        wrong = families.wrong_marker(right)
        assert wrong[1:] == right[1:] and wrong[0] == families.MISTAKEN_MARKERS[k] != right[0]
    # no marker of one family is a marker of another: a fix cannot be shared through the output token
    assert len(set(families.CORRECT_MARKERS + families.MISTAKEN_MARKERS)) == 2 * len(families.TAGS)


def test_registry_and_default_task():
    assert DEFAULT_TASK == "families-v4"
    assert set(TASKS) == {"families-v4", "families-u50", "families-u90", "arith-v3"}
    with pytest.raises(ValueError, match="unknown task 'v9'; valid: families-v4, families-u50, families-u90, arith-v3"):
        get_task("v9")
    v3 = get_task("arith-v3")  # the previous default's recipe, unchanged, so its results stay reproducible
    assert (v3.warm_start_steps, v3.warm_start_lr, dict(v3.mistake_rate)) == (3000, 5e-3, {3: 0.7, 4: 0.9})
    assert v3.chars == "0123456789+-*/=()., \n"


def test_embedded_datasets_carry_the_family_column():
    pytest.importorskip("datasets")
    from cobarl.train.data import embedded_datasets

    train, held_out, _ = embedded_datasets(train_size=48, eval_size=24, seed=0)
    assert train["family"] == train["difficulty"] and len(set(held_out["family"])) == 24
    v3_train, _, _ = embedded_datasets(train_size=20, eval_size=10, seed=0, task="arith-v3")
    assert "family" not in v3_train.column_names


def test_tokenizer_of_the_task_round_trips_its_prompts():
    pytest.importorskip("transformers")
    from cobarl.models.tiny import build_tokenizer

    tok = build_tokenizer(families.CHARS)
    for p in families.make_problems(48, seed=0):
        ids = tok(p.prompt + p.answer)["input_ids"]
        assert len(ids) == len(p.prompt + p.answer) and tok.decode(ids) == p.prompt + p.answer
    with pytest.raises(ValueError, match="repeats a character"):
        build_tokenizer("aa")


def test_a_run_saved_before_the_task_option_resumes_on_its_own_task(tmp_path):
    pytest.importorskip("yaml")
    from cobarl.train.config import TrainConfig
    from cobarl.train.config_files import dump_yaml, load_yaml
    from cobarl.train.rundir import load_run_config

    path = tmp_path / "config.yaml"
    dump_yaml(TrainConfig(), path)
    values = load_yaml(path)
    values.pop("task")
    import yaml

    path.write_text(yaml.safe_dump(values))
    assert load_run_config(path).task == "arith-v3"  # the default of the time, not today's
    dump_yaml(TrainConfig(task="families-v4"), path)
    assert load_run_config(path).task == "families-v4"


def test_a_regime_changes_labels_and_warm_start_only():
    v4, u90 = get_task("families-v4"), get_task("families-u90")
    # task v4 is the regime with nothing unreachable: its recipe is the table it always had
    assert dict(v4.mistake_rate) == dict(enumerate(families.MISTAKE_RATES)) and "regime" not in v4.describe()
    (a_train, a_held), (b_train, b_held) = v4.make_splits(240, 96, seed=2), u90.make_splits(240, 96, seed=2)
    assert [p.prompt for p in a_train + a_held] == [p.prompt for p in b_train + b_held]
    regime = u90.regime
    for a, b in zip(a_train + a_held, b_train + b_held):
        if a.family in regime.wrong_reference:  # mislabelled on both splits, never the rule's answer
            assert b.answer[0] == a.answer[0] and b.answer[1] != a.answer[1]
        else:
            assert b.answer == a.answer
    assert {k for k, q in u90.mistake_rate.items() if q == 1.0} == set(regime.beyond_reach)
    # the warm-start learns the rule: its problems carry the rule's answers whatever the regime
    assert [p.answer for p in u90.make_warm_start(50, seed=0)] == [p.answer for p in v4.make_warm_start(50, seed=0)]
    assert u90.describe()["regime"] == {"beyond_reach": [14, 16, 18, 20, 22], "wrong_reference": [15, 17, 19, 21, 23]}


def test_a_regime_refuses_a_family_of_two_kinds_or_out_of_range():
    with pytest.raises(ValueError, match="both beyond reach and wrong-reference"):
        families.Regime(beyond_reach=frozenset({3}), wrong_reference=frozenset({3}))
    with pytest.raises(ValueError, match="family indices in 0..23"):
        families.Regime(beyond_reach=frozenset({24}))
