"""Dataset loading (verl/DAPO layout), the reward registry and config validation for `cobarl train`."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("datasets")

from cobarl.train.config import TrainConfig, make_config  # noqa: E402
from cobarl.train.data import embedded_datasets, load_dataset_file, split_held_out  # noqa: E402
from cobarl.rewards import resolve_reward  # noqa: E402
from cobarl.models.load import resolve_model_path  # noqa: E402
from cobarl.train.metrics_log import truncate_metrics  # noqa: E402
from cobarl.train.rewards import make_reward_func  # noqa: E402


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_verl_layout_jsonl_and_parquet(tmp_path):
    rows = [
        {"data_source": "dapo", "prompt": [{"role": "user", "content": "1+1="}],
         "reward_model": {"style": "rule", "ground_truth": "2"}, "extra_info": {"index": 7}},
        {"prompt": [{"role": "user", "content": "2+2="}], "answer": 4},
    ]
    ds = load_dataset_file(write_jsonl(tmp_path / "d.jsonl", rows))
    assert ds["prompt_id"] == [0, 1]
    assert ds["answer"] == ["2", "4"]
    assert ds["prompt"][0] == [{"role": "user", "content": "1+1="}]
    with pytest.raises(ValueError, match="mixes strings"):
        load_dataset_file(write_jsonl(tmp_path / "m.jsonl", [rows[0], {"prompt": "2+2=", "answer": "4"}]))

    from datasets import Dataset

    # The raw DAPO release repeats every prompt ~100 times: one prompt, one id, whatever the copies.
    third = {**rows[0], "prompt": [{"role": "user", "content": "3+3="}], "reward_model": {"ground_truth": "6"}}
    Dataset.from_list([rows[0], third, rows[0], third, rows[0]]).to_parquet(str(tmp_path / "d.parquet"))
    ds = load_dataset_file(tmp_path / "d.parquet")
    assert ds["answer"] == ["2", "6"] and ds["prompt_id"] == [0, 1]
    train, held_out = split_held_out(ds, 1)
    assert not {str(p) for p in train["prompt"]} & {str(p) for p in held_out["prompt"]}


@pytest.mark.parametrize(
    "row, field",
    [({"reward_model": {"ground_truth": "2"}}, "missing the problem text ('problem', 'question' or 'prompt')"),
     ({"prompt": "1+1="}, "missing the ground truth ('answer', 'final_answer', 'reward_model.ground_truth'")],
)
def test_missing_field_is_named(tmp_path, row, field):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "0+0=", "answer": "0"}, row])
    with pytest.raises(ValueError, match=re.escape(f"row 1: {field}")):
        load_dataset_file(path)


def test_missing_file_and_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset file not found"):
        load_dataset_file(tmp_path / "nope.jsonl")
    (tmp_path / "d.csv").write_text("prompt,answer\n")
    with pytest.raises(ValueError, match="unsupported format"):
        load_dataset_file(tmp_path / "d.csv")


def test_embedded_and_held_out_split():
    train, held_out, _ = embedded_datasets(train_size=40, eval_size=10, seed=0)
    assert len(train) == 40 and len(held_out) == 10
    assert not set(train["prompt"]) & set(held_out["prompt"])
    assert len(set(train["prompt_id"]) | set(held_out["prompt_id"])) == 50
    a, b = split_held_out(train, 8)
    assert (len(a), len(b)) == (32, 8)
    # a validation split leaves the other two as they were and overlaps neither
    train2, held_out2, val = embedded_datasets(train_size=40, eval_size=10, seed=0, validation_size=12)
    assert train2["prompt"] == train["prompt"] and held_out2["prompt"] == held_out["prompt"]
    assert len(val) == 12 and not set(val["prompt"]) & (set(train["prompt"]) | set(held_out["prompt"]))
    assert min(val["prompt_id"]) == 50 and len(set(val["prompt_id"])) == 12


def test_dataset_validation_split_is_the_last_train_rows_and_bounded(tmp_path):
    from cobarl.train.config import make_config
    from cobarl.train.data import load_splits

    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"{k}+0=", "answer": str(k)} for k in range(20)])
    train, held_out, val = load_splits(make_config({"dataset": str(path), "eval_size": 4, "validation_size": 3}))
    assert (len(train), len(held_out), len(val)) == (13, 4, 3)
    assert val["prompt"] == ["13+0=", "14+0=", "15+0="] and held_out["prompt"][0] == "16+0="
    with pytest.raises(ValueError, match="--validation-size 9 would take more than half of the 16 training rows"):
        load_splits(make_config({"dataset": str(path), "eval_size": 4, "validation_size": 9}))


def test_reward_registry_accepts_name_callable_and_import_path():
    assert resolve_reward("exact")("12<eos>", "12") == 1.0
    fn = lambda c, a: 0.5  # noqa: E731
    assert resolve_reward(fn) is fn
    assert resolve_reward("cobarl.rewards.exact:exact_match_reward")("3", "3") == 1.0
    with pytest.raises(ValueError, match="valid rewards: exact"):
        resolve_reward("math-nope")
    trl_fn = make_reward_func(resolve_reward("exact"))
    assert trl_fn(prompts=["1+1=", "1+1="], completions=["2", [{"role": "assistant", "content": "3"}]],
                  answer=["2", "2"]) == [1.0, 0.0]


def test_model_path_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="model path does not exist"):
        resolve_model_path(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))
    assert resolve_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # hub names pass through


def test_config_errors_are_specific():
    with pytest.raises(ValueError, match="unknown strategy 'nope'; valid strategies: uniform, coba"):
        make_config({"allocator": "nope"})
    with pytest.raises(ValueError, match=r"budget cannot be met with --rollouts-per-step 15 over --prompts-per-step 8: total_budget=15 is below 8 prompts x min_budget=2 = 16"):
        make_config({"rollouts_per_step": 15, "prompts_per_step": 8})
    with pytest.raises(ValueError, match=r"tau must be .*'hot'"):
        make_config({"tau": "hot"})
    assert make_config({"tau": "adaptive"}).strategy.tau == "adaptive" and TrainConfig().strategy.tau == 8.0
    assert make_config({"tau": "adaptive"}).strategy.overrides == {"tau": "adaptive", "max_budget": 32}


def test_truncate_metrics_drops_redone_steps_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "rew')
    truncate_metrics(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_one_set_of_allocator_defaults_with_the_embedded_task_preset(tmp_path):
    """The library's StrategyConfig defaults everywhere; the embedded task's max_budget=32 is its
    preset, applied only when it runs and --max-budget is not given (issue 19, item 2)."""
    from cobarl.policies import StrategyConfig
    from cobarl.tasks.embedded import TASKS
    from cobarl.train.config_files import config_diff, dump_yaml
    from cobarl.train.rundir import CONFIG_FILE, read_saved_config

    assert all(t.max_budget == 32 for t in TASKS.values())
    assert make_config({}).strategy == StrategyConfig(max_budget=32) == TrainConfig().strategy
    for task in TASKS:
        assert make_config({"task": task, "allocator": "knapsack"}).strategy.max_budget == 32
    assert make_config({"dataset": "d.jsonl"}).strategy == StrategyConfig() == TrainConfig(dataset="d.jsonl").strategy
    assert make_config({"max_budget": 128}).strategy.max_budget == 128  # the user's value wins over the preset
    assert make_config({"dataset": "d.jsonl", "max_budget": 16}).strategy.max_budget == 16
    # a run whose config.yaml recorded max_budget 32 resumes without a config difference
    dump_yaml(make_config({"max_steps": 5}), tmp_path / CONFIG_FILE)
    saved = read_saved_config(tmp_path)
    assert saved.strategy.max_budget == 32
    assert config_diff(saved, make_config({"resume": True}, base=saved)) == []
    assert config_diff(saved, make_config({})) == []
