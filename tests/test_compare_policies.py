"""`cobarl compare` with every rollout policy: arms and their options, and a report that compares on
rollouts GENERATED (spending per arm, accuracy at equal generated rollouts)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from cobarl.experiments import CompareOptions, RunResult, SimConfig, parse_strategies, parse_strategy, run_compare
from cobarl.experiments.report.report import write_report
from cobarl.experiments.report.report_stats import accuracy_at_rollouts, equal_generated_rollouts
from cobarl.experiments.report.summary_io import FORMAT_VERSION, SummaryFormatError, read_summary

TINY_SIM = SimConfig(train_prompts=64, heldout_prompts=16, clusters=4)
NEW = ("reinforce-ada", "reinforce-ada-pos", "dapo", "pods", "gvm")


def _options(names: str, **kw) -> CompareOptions:
    base = dict(seeds=(0, 1), steps=8, prompts_per_step=8, rollouts_per_prompt=4, sim=TINY_SIM)
    return CompareOptions(strategies=tuple(parse_strategies([names])), **{**base, **kw})


def test_policy_arms_parse_with_their_options_and_refuse_others():
    assert parse_strategy("reinforce-ada:round_size=4").overrides == {"round_size": 4}
    assert parse_strategy("dapo:gen_batch_factor=2,max_gen_batches=0").overrides == {"gen_batch_factor": 2, "max_gen_batches": 0}
    assert parse_strategy("pods:generate_size=32").strategy == "pods"
    assert parse_strategy("gvm:gvm_alpha=0.01").overrides == {"weight_alpha": 0.01}  # an old name reads as today's
    specs = parse_strategies(["uniform,reinforce-ada:round_size=8,max_rounds=2,dapo"])
    assert [s.label for s in specs] == ["uniform", "reinforce-ada:round_size=8,max_rounds=2", "dapo"]
    from cobarl.experiments.comparison.cli_args import check_options

    with pytest.raises(ValueError, match="--strategies 'dapo:round_size=4': round_size is an option of reinforce-ada"):
        check_options(_options("dapo:round_size=4"))
    with pytest.raises(ValueError, match="a whole number"):
        _options("pods", rollouts_per_prompt=4.5)


def test_reinforce_ada_round_size_follows_the_per_prompt_budget_unless_given():
    """The policy's own default (one default set): 2 x the rollouts trained per prompt, the public 8 for 4."""
    from cobarl.policies import make_policy

    assert set(make_policy(strategy="reinforce-ada").begin(list(range(8)), 32).values()) == {8}
    assert set(make_policy(strategy="reinforce-ada-pos").begin(list(range(8)), 64).values()) == {16}
    assert set(make_policy(strategy="reinforce-ada", round_size=5).begin(list(range(8)), 32).values()) == {5}
    opts = _options("reinforce-ada,reinforce-ada:round_size=5", rollouts_per_prompt=4)
    assert [s.overrides.get("round_size") for s in opts.strategies] == [None, 5]  # compare fills nothing in


def test_simulated_compare_runs_every_policy_and_reports_on_generated_rollouts(tmp_path):
    opts = _options("uniform,coba,knapsack-rl," + ",".join(NEW))
    runs = run_compare(opts, progress=False)
    # sim_accuracy: the accuracy sections too (tests/test_sim_trust.py: the report without them)
    summary = write_report(runs, replace(opts, sim_accuracy=True), tmp_path, plots=False)
    arms = summary["strategies"]
    # spending per arm: generated against trained, rounds, prompts consumed
    for label in arms:
        runs_of = [r for r in runs if r.label == label]
        made = [r.summary["rollouts"] / len(r.rows) for r in runs_of]  # runs end at equal generated rollouts
        assert arms[label]["rollouts_generated_per_step"]["mean"] == pytest.approx(np.mean(made))
        assert arms[label]["rollouts_trained_per_step"]["mean"] == 32
        assert arms[label]["rollouts"]["mean"] == pytest.approx(np.mean([r.rows[-1]["rollouts"] for r in runs_of]))
    for label in ("uniform", "coba", "knapsack-rl", "gvm"):
        assert arms[label]["rollouts_generated_per_step"]["mean"] == 32 and arms[label]["rounds_per_step"]["mean"] == 1
    for label in ("reinforce-ada", "reinforce-ada-pos", "dapo", "pods"):
        assert arms[label]["rollouts_generated_per_step"]["mean"] > 32
    assert arms["pods"]["rollouts_generated_per_step"]["mean"] == 4 * 32
    assert arms["dapo"]["prompts_consumed_per_step"]["mean"] > 8
    assert arms["reinforce-ada"]["rounds_per_step"]["mean"] > 1
    # accuracy at equal generated rollouts: G is the smallest final generated total of any run
    g = summary["equal_generated_rollouts"]
    assert g == min(r.rows[-1]["rollouts"] for r in runs) == opts.steps * 32
    uniform_at_g = [r.rows[-1]["eval/heldout_accuracy"] for r in runs if r.label == "uniform"]  # uniform ends at G
    assert arms["uniform"]["heldout_accuracy_at_equal_generated"]["values"] == pytest.approx(uniform_at_g)
    pods = [accuracy_at_rollouts(r, "eval/heldout_accuracy", g) for r in runs if r.label == "pods"]
    assert arms["pods"]["heldout_accuracy_at_equal_generated"]["values"] == pytest.approx(pods)
    gap = summary["gaps_vs_baseline"]["pods"]["heldout_accuracy_at_equal_generated"]
    assert gap["values"] == pytest.approx([a - b for a, b in zip(pods, uniform_at_g)])
    # the written summary is version 2 (3 adds where each run came from, which only the CLI knows) and reads
    # back whole; the report states both
    assert read_summary(tmp_path / "summary.json").format_version == 2 == FORMAT_VERSION - 1
    report = (tmp_path / "report.md").read_text()
    assert "## How each strategy spends a step" in report and "| `pods` | 128.0 ± 0.0 | 32.0 ± 0.0 | 1.0 ± 0.0 |" in report
    assert f"## Held-out accuracy at equal generated rollouts (G = {g:,.0f})" in report
    assert "rollouts generated / baseline" in report


def test_a_version_2_summary_without_its_new_keys_is_refused(tmp_path):
    opts = _options("uniform,dapo", seeds=(0,), steps=4)
    write_report(run_compare(opts, progress=False), opts, tmp_path / "r", plots=False)
    good = json.loads((tmp_path / "r" / "summary.json").read_text())
    for key, damage in {
        "rounds_per_step": lambda d: d["strategies"]["dapo"].pop("rounds_per_step"),
        "heldout_accuracy_at_equal_generated": lambda d: d["gaps_vs_baseline"]["dapo"].pop("heldout_accuracy_at_equal_generated"),
        "equal_generated_rollouts": lambda d: d.pop("equal_generated_rollouts"),
    }.items():
        d = json.loads(json.dumps(good))
        damage(d)
        (tmp_path / "s.json").write_text(json.dumps(d))
        with pytest.raises(SummaryFormatError, match=f"lacks '{key}'"):
            read_summary(tmp_path / "s.json")


def test_accuracy_at_rollouts_interpolates_on_the_generated_curve():
    acc = "eval/heldout_accuracy"
    rows = [{"rollouts": 100.0, acc: 0.5}, {"rollouts": 300.0, acc: None}, {"rollouts": 400.0, acc: 0.8}]
    run = RunResult("a", 0, rows, {"initial_heldout_accuracy": 0.3})
    assert accuracy_at_rollouts(run, acc, 50) == pytest.approx(0.4)  # from (0, initial held-out accuracy)
    assert accuracy_at_rollouts(run, acc, 250) == pytest.approx(0.65)  # sparse evaluations: finite points only
    assert math.isnan(accuracy_at_rollouts(run, acc, 401))
    assert math.isnan(accuracy_at_rollouts(RunResult("b", 0, rows, {}), acc, 50))  # before the first point
    greedy = [{"rollouts": 100.0, "g": 0.5}]  # the initial point is held-out accuracy's, no other metric's
    assert math.isnan(accuracy_at_rollouts(RunResult("c", 0, greedy, {"initial_heldout_accuracy": 0.3}), "g", 50))
    assert equal_generated_rollouts([run, RunResult("c", 0, [{"rollouts": 250.0}], {})]) == 250.0


def test_real_backend_counts_generated_rollouts(monkeypatch):
    def run_training(config):
        rows = [{"budget/total": 64.0, "rollout/count": 100.0 * (k + 1), "eval/heldout_accuracy": 0.1} for k in range(3)]
        return {"rows": rows, "summary": {}}

    from cobarl.experiments.comparison import real

    monkeypatch.setattr(real, "run_training", run_training)
    opts = _options("uniform", seeds=(0,), steps=3, backend="real")
    (run,) = run_compare(opts, progress=False)
    assert [r["rollouts"] for r in run.rows] == [100.0, 300.0, 600.0]
