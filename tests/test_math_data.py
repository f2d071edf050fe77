"""Math datasets: every layout's sample file, DAPO de-duplication, hub guard, prompt templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cobarl.answers import last_boxed

from cobarl.data import math as mdata
from cobarl.data import (
    BENCHMARKS,
    MathProblem,
    chat_messages,
    format_prompt,
    instruction_text,
    load_math,
    rows_to_problems,
)

DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize(
    "file, layout, count, first_id, answers",
    [
        # answers: index -> expected text; checks the per-layout field mapping
        ("math500_sample.jsonl", "math500", 24, "test/counting_and_probability/100.json",
         {1: r"\frac{11}{12}", 6: r"\left( 3, \frac{\pi}{2} \right)", 13: r"120^\circ"}),
        ("aime24_sample.jsonl", "aime24", 24, "60", {4: "49", 9: "24", 22: "828"}),  # ints -> strings
        ("aime25_sample.jsonl", "aime25", 20, "aime25-0", {0: "70"}),  # no id field: source-index
        ("amc23_sample.jsonl", "amc23", 20, "0", {0: "14", 3: "27", 4: "0.5", 11: "0.625"}),  # 27.0 -> 27
        ("olympiadbench_sample.jsonl", "olympiadbench", 20, "2000",
         {0: "2,3", 1: "4, -4", 6: r"\frac{9}{10}", 18: "(1,2),(2,1)"}),  # $...$ stripped, list joined
        ("minerva_sample.jsonl", "minerva", 18, "minerva-0", {3: r"\frac{1}{8}", 16: "5", 17: "2"}),  # boxed from solution
        ("dapo_sample.parquet", "dapo", 24, "dapo-0000", {0: "5", 23: "1"}),
    ],
)
def test_each_layout_loads(file, layout, count, first_id, answers):
    problems = load_math(DATA / file, layout=layout)
    assert len(problems) == count
    assert all(isinstance(p, MathProblem) and p.prompt and p.answer for p in problems)
    assert problems[0].id == first_id
    assert {p.source for p in problems} == {layout}
    assert len({p.id for p in problems}) == count  # ids are unique
    for i, expected in answers.items():
        assert problems[i].answer == expected, (i, problems[i])


def test_auto_detection_matches_named_layout():
    for file, layout in [("dapo_sample.parquet", "dapo"), ("olympiadbench_sample.jsonl", "olympiadbench"),
                         ("math500_sample.jsonl", "math500"), ("aime24_sample.jsonl", "aime24")]:
        auto = load_math(DATA / file)
        named = load_math(DATA / file, layout=layout)
        assert [(p.id, p.prompt, p.answer) for p in auto] == [(p.id, p.prompt, p.answer) for p in named]
        assert auto[0].source == Path(file).stem  # auto: named after the file
    assert load_math(DATA / "math500_sample.jsonl")[0].difficulty == 1  # MATH level kept


def test_dapo_dedup_and_wrapper():
    import pyarrow.parquet as pq

    raw = pq.read_table(DATA / "dapo_sample.parquet").to_pylist()
    assert len(raw) == 60  # 24 prompts repeated 1-4 times, like the raw release
    problems = load_math(DATA / "dapo_sample.parquet")
    assert len(problems) == 24
    assert [p.id for p in problems] == [f"dapo-{i:04d}" for i in range(24)]  # first occurrence, in order
    # the DAPO instruction is stripped, and template "dapo" restores the original text exactly
    original = raw[0]["prompt"][0]["content"]
    assert "Remember" not in problems[0].prompt and not problems[0].prompt.startswith("Solve the following")
    assert instruction_text(problems[0].prompt, "dapo") == original
    assert len(load_math(DATA / "dapo_sample.parquet", dedupe=False)) == 60
    assert len(load_math(DATA / "dapo_sample.parquet", limit=5)) == 5


def test_dedup_ignores_whitespace_and_keeps_first():
    rows = [{"problem": "What is 1+1?", "answer": "2"}, {"problem": "What is  1+1? ", "answer": "3"},
            {"problem": "What is 2+2?", "answer": "4"}]
    problems = rows_to_problems(rows, source="t")
    assert [(p.id, p.answer) for p in problems] == [("t-0", "2"), ("t-2", "4")]


def test_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "x", "answer": "1"}) + "\n" + json.dumps({"problem": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"row 1: missing the ground truth"):
        load_math(bad)
    no_text = tmp_path / "nt.jsonl"
    no_text.write_text(json.dumps({"answer": "1"}) + "\n")
    with pytest.raises(ValueError, match="missing the problem text"):
        load_math(no_text)
    with pytest.raises(ValueError, match="unknown layout"):
        load_math(DATA / "aime24_sample.jsonl", layout="gsm8k")
    with pytest.raises(FileNotFoundError):
        load_math(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="unsupported format"):
        (tmp_path / "x.csv").write_text("a,b\n")
        load_math(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        load_math("no-such-benchmark")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no rows"):
        load_math(tmp_path / "empty.jsonl")


def test_hub_is_guarded_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert mdata.hub_available() is False  # decided from the env var, no request made
    with pytest.raises(ConnectionError, match=r"HuggingFaceH4/aime_2024.*unreachable.*local"):
        load_math("aime24")
    with pytest.raises(ConnectionError, match="unreachable"):
        load_math("hf:someone/some-dataset")
    assert {"math500", "aime24", "aime25", "amc23", "olympiadbench", "minerva", "dapo-math-17k"} <= set(BENCHMARKS)


def test_last_boxed_nested_and_unbalanced():
    assert last_boxed(r"\boxed{1} then \boxed{\frac{a}{\sqrt{b}}}.") == r"\frac{a}{\sqrt{b}}"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"\boxed{\frac{1}{2}") is None
    assert last_boxed("none") is None


class _ChatTokenizer:
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_prompt_templates():
    assert instruction_text("2+2?", "raw") == "2+2?"
    assert instruction_text("2+2?", "boxed").endswith("within \\boxed{}.")
    assert chat_messages("2+2?", "raw", system="Be brief.") == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    # a chat template is applied when the tokenizer has one; otherwise plain text
    assert format_prompt("2+2?", "raw", tokenizer=_ChatTokenizer(), system="S") == "<system>S<user>2+2?<assistant>"
    assert format_prompt("3+5=", "raw") == "3+5="
    from cobarl.models.tiny import build_tokenizer

    assert format_prompt("3+5=", "raw", tokenizer=build_tokenizer()) == "3+5="
    with pytest.raises(ValueError, match="unknown prompt template"):
        instruction_text("x", "cot")


def test_to_dataset_matches_train_columns():
    from cobarl.data import to_dataset

    problems = load_math(DATA / "math500_sample.jsonl")[:3]
    ds = to_dataset(problems, template="boxed", chat=True)
    assert ds["prompt_id"] == [0, 1, 2]
    assert ds["prompt"][0][-1]["role"] == "user" and "boxed" in ds["prompt"][0][-1]["content"]
    assert ds["answer"] == [p.answer for p in problems] and "difficulty" in ds.column_names
    assert to_dataset(problems)["prompt"][0] == problems[0].prompt


def test_embedded_problems_are_the_task_held_out_split():
    from cobarl.tasks import families
    from cobarl.tasks.arithmetic import make_problems

    problems = mdata.embedded_problems("arith-v3", 8, seed=0)
    assert [p.prompt for p in problems] == [p.prompt for p in make_problems(8, seed=0, split="eval")]
    assert problems[0].source == "arith-v3" and problems[0].difficulty is not None
    v4 = mdata.embedded_problems("families-v4", 24, seed=0)
    assert [p.prompt for p in v4] == [p.prompt for p in families.make_splits(0, 24, seed=0)[1]]
