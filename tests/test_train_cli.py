"""`cobarl train` end to end as a subprocess (tiny random model saved locally), plus resume and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_module

pytest.importorskip("trl")
torch = pytest.importorskip("torch")

from cobarl.train.cli import build_parser, config_from_args  # noqa: E402


def cli(*args: str, timeout: float = 300):
    return run_module("cobarl.train", *args, timeout=timeout)


SMALL = ["--max-steps", "3", "--save-steps", "2", "--prompts-per-step", "4", "--rollouts-per-prompt", "4",
         "--max-budget", "8", "--train-size", "16", "--eval-size", "8", "--max-completion-length", "4",
         "--learning-rate", "1e-2", "--no-progress"]


@pytest.mark.slow
def test_cli_end_to_end_and_resume(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    res = cli("--model", str(tiny_model_dir), "--output-dir", str(run_dir), "--reward", "helpers:parity_reward", *SMALL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "held-out accuracy" in res.stdout and str(run_dir) in res.stdout
    assert (run_dir / "config.yaml").is_file() and (run_dir / "summary.json").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("budget/mean", "capability/alpha", "capability/beta", "capability/failure_rate",
                "rollout/effective_ratio", "reward/mean", "perf/step_s", "perf/rollouts_per_s"):
        assert key in rows[-1], key
    from cobarl.metrics import SCHEMA

    ours = {k for r in rows for k in r if "/" in k and k.split("/")[0] in ("budget", "capability", "rollout", "reward", "perf", "eval")}
    assert ours <= set(SCHEMA), ours - set(SCHEMA)  # TRL's own keys (reward_std, rewards/...) pass through as they are
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("initial_heldout_accuracy", "final_heldout_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    assert "eval/heldout_greedy_accuracy" in summary["accuracy_before"]
    assert (run_dir / "checkpoint-3" / "cobarl_state.json").is_file()

    # parameters changed
    from safetensors.torch import load_file

    start = load_file(tiny_model_dir / "model.safetensors")
    end = load_file(run_dir / "checkpoint-3" / "model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)

    # resume continues from the last checkpoint with the saved config; no step is lost or repeated
    res = cli("--resume", "--output-dir", str(run_dir), "--max-steps", "5")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming from" in res.stdout
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 5


@pytest.mark.slow
def test_cli_refuses_clearly(tmp_path, tiny_model_dir):
    res = cli("--model", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "r1"), *SMALL)
    assert res.returncode != 0 and "model path does not exist" in res.stderr
    res = cli("--allocator", "nope")
    assert res.returncode == 2 and "coba" in res.stderr and "uniform" in res.stderr
    res = cli("--rollouts-per-step", "10", "--prompts-per-step", "8")
    assert res.returncode == 2 and "budget cannot be met" in res.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "1+1=", "data_source": "x"}) + "\n")
    res = cli("--model", str(tiny_model_dir), "--dataset", str(bad), "--output-dir", str(tmp_path / "r2"), *SMALL)
    assert res.returncode != 0 and "reward_model.ground_truth" in res.stderr
    assert not (tmp_path / "r2" / "metrics.jsonl").exists()


def test_config_precedence_yaml_then_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_steps: 7\nallocator: uniform\nkappa: 3.5\n")
    c = config_from_args(["--config", str(cfg), "--max-steps", "9", "--k", "3"])
    a = c.strategy
    assert (c.max_steps, a.name, a.kappa, a.window) == (9, "uniform", 3.5, 3)
    assert c.rollouts_per_step == c.prompts_per_step * 8  # derived: prompts x 8 rollouts on average
    cfg.write_text("max_stepz: 7\n")
    with pytest.raises(ValueError, match="unknown option.*max_stepz"):
        config_from_args(["--config", str(cfg)])
    assert "--kappa" in build_parser().format_help()


def test_run_training_feeds_the_compare_real_backend(tmp_path, tiny_model_dir):
    """`cobarl compare --backend real` calls run_training: per-step rows with the report's metric names."""
    from cobarl.experiments.comparison.real import run_training

    torch.set_num_threads(1)
    out = run_training(
        {
            "allocator": "fixed-beta",
            "allocator_overrides": {"fixed_alpha": 1.5, "fixed_beta": 10.5},
            "seed": 0, "max_steps": 2, "prompts_per_step": 4, "rollouts_per_prompt": 4, "progress": False,
            "model": str(tiny_model_dir), "output_dir": str(tmp_path / "run"), "max_budget": 8,
            "train_size": 16, "eval_size": 8, "max_completion_length": 4, "save_steps": 2, "validation_size": 8,
            "transitions": True, "eval_every": 1,
        }
    )
    rows = out["rows"]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["budget/total"] == 16 for r in rows)
    assert rows[-1]["capability/alpha"] == 1.5 and "rollout/effective_ratio" in rows[-1]
    assert "eval/heldout_accuracy" in rows[-1]
    assert 0 <= rows[-1]["eval/validation_accuracy"] <= 1  # what a real --grid chooses on
    # --eval-every: the before/after evaluation during training too, so accuracy can be drawn against rollouts
    assert {"eval/heldout_accuracy", "eval/heldout_greedy_accuracy"} <= set(rows[0])
    assert out["summary"]["steps"] == 2
    transitions = np.array(out["summary"]["transitions"])  # every train prompt, bucketed before and after
    assert transitions.shape == (5, 5) and transitions.sum() == 16
    assert np.array_equal(transitions.sum(axis=1), np.bincount(
        json.loads((tmp_path / "run" / "train_buckets_before.json").read_text()), minlength=5))


def test_compare_real_runs_use_the_train_config_tree(monkeypatch):
    """A strategy option of `cobarl compare --backend real` is a `cobarl train` option, validated the same way."""
    from cobarl.experiments.comparison.backends import real_run_options
    from cobarl.experiments.comparison.compare import run_compare
    from cobarl.experiments.comparison.runs import CompareOptions
    from cobarl.experiments.comparison.specs import parse_strategy
    from cobarl.train.config import make_config

    opts = CompareOptions(strategies=(parse_strategy("coba:kappa=7,window=2"),), seeds=(3,), steps=5,
                          prompts_per_step=8, rollouts_per_prompt=4, backend="real")
    from_compare = make_config(real_run_options(opts.strategies[0], 3, opts))
    from_cli = config_from_args(["--kappa", "7", "--window", "2", "--seed", "3", "--max-steps", "5",
                                 "--prompts-per-step", "8", "--rollouts-per-prompt", "4", "--no-progress",
                                 "--transitions", "--eval-every", "1",
                                 "--max-generated", "160"])  # what every real compare run adds (5 x 8 x 4 generated)
    assert from_compare == from_cli

    import cobarl.experiments.comparison.real as real

    def must_not_run(options):
        raise AssertionError("a run started before every config was validated")

    monkeypatch.setattr(real, "run_training", must_not_run)
    with pytest.raises(ValueError, match=r"(?s)coba:kappa=1.*kappa must be"):
        bad = CompareOptions(strategies=(parse_strategy("uniform"), parse_strategy("coba:kappa=1")), seeds=(0,), steps=3,
                             prompts_per_step=8, rollouts_per_prompt=4, backend="real")
        run_compare(bad, progress=False)
