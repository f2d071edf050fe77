"""`cobarl compare` continues a comparison in the same --output-dir: finished runs are reused (never run
again), only the missing (arm, seed) pairs run, and runs made under other settings are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cobarl.experiments.comparison import compare
from cobarl.experiments.comparison.backends import BACKENDS
from cobarl.experiments.comparison.cli import main
from cobarl.experiments.comparison.run_store import run_file
from cobarl.experiments.report.summary_io import read_summary
from test_experiments import _InterruptAfter  # a progress bar whose n-th update is a Ctrl-C

TINY = ["--steps", "10", "--prompts-per-step", "8", "--rollouts-per-prompt", "8", "--train-prompts", "64",
        "--heldout-prompts", "16", "--validation-prompts", "16", "--clusters", "4", "--seeds", "2", "--workers", "1",
        "--no-progress", "--no-plots"]


@pytest.fixture
def calls(monkeypatch):
    """The (label, seed) of every simulated run started in this process."""
    started: list[tuple[str, int]] = []
    simulated = BACKENDS["simulated"]

    def counted(spec, seed, options):
        started.append((spec.label, seed))
        return simulated(spec, seed, options)

    monkeypatch.setitem(BACKENDS, "simulated", counted)
    return started


def _report(out: Path) -> tuple[dict, str]:
    """summary.json without what says how it was produced (the command, which runs were reused), and metrics.csv."""
    summary = json.loads((out / "summary.json").read_text())
    for key in ("command", "runs"):
        summary.pop(key)
    return summary, (out / "metrics.csv").read_text()


def test_an_interrupted_comparison_continues_to_the_uninterrupted_report(monkeypatch, tmp_path, calls, capsys):
    args = [*TINY, "--strategies", "uniform,coba"]
    assert main([*args, "--output-dir", str(tmp_path / "whole")]) == 0
    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        m.setattr(compare, "_progress", lambda total, enabled: _InterruptAfter(3))
        assert main([*args, "--output-dir", str(out)]) == 130
    assert "the same command continues it" in capsys.readouterr().err
    assert read_summary(out / "summary.json").incomplete["missing"] == ["coba seed 1"]
    calls.clear()
    assert main([*args, "--output-dir", str(out)]) == 0
    assert calls == [("coba", 1)]  # the finished runs are never run again
    assert _report(out) == _report(tmp_path / "whole")
    runs = read_summary(out / "summary.json").runs
    assert [(r["label"], r["seed"], r["reused"]) for r in runs] == [
        ("uniform", 0, True), ("uniform", 1, True), ("coba", 0, True), ("coba", 1, False)]
    assert all(r["command"].startswith("cobarl compare ") and r["finished_at"] for r in runs)
    assert "3 reused from earlier commands" in (out / "report.md").read_text()


def test_more_arms_and_seeds_run_only_the_new_pairs(tmp_path, calls, capsys):
    out = tmp_path / "cmp"
    assert main([*TINY, "--strategies", "uniform,coba", "--output-dir", str(out)]) == 0
    calls.clear()
    assert main([*TINY, "--strategies", "uniform,coba,dapo", "--output-dir", str(out)]) == 0
    assert calls == [("dapo", 0), ("dapo", 1)]
    assert list(read_summary(out / "summary.json").strategies) == ["uniform", "coba", "dapo"]
    calls.clear()
    assert main([*TINY, "--strategies", "uniform,coba,dapo", "--seed-list", "0,1,2", "--output-dir", str(out)]) == 0
    assert calls == [("uniform", 2), ("coba", 2), ("dapo", 2)]
    # the same report as one comparison of all of them at once
    assert main([*TINY, "--strategies", "uniform,coba,dapo", "--seed-list", "0,1,2",
                 "--output-dir", str(tmp_path / "once")]) == 0
    assert _report(out) == _report(tmp_path / "once")
    calls.clear()  # a subset reports only its arms, and keeps the others' runs
    assert main([*TINY, "--strategies", "coba", "--output-dir", str(out)]) == 0
    assert calls == [] and list(read_summary(out / "summary.json").strategies) == ["coba"]
    assert "also holds runs of dapo, uniform" in capsys.readouterr().err and run_file(out, "dapo", 2).is_file()


@pytest.mark.parametrize("change, setting", [
    (["--steps", "12"], "steps = 10"),
    (["--budget", "steps"], "budget = 'generated'"),
    (["--lr", "2"], "simulator.lr = 1.0"),
    (["--budget-multiplier", "0.5"], "budget_multiplier = 1.0"),
])
def test_runs_made_under_other_settings_are_refused_naming_the_setting(tmp_path, calls, capsys, change, setting):
    out = tmp_path / "cmp"
    assert main([*TINY, "--strategies", "uniform", "--seeds", "1", "--output-dir", str(out)]) == 0
    before, calls[:], _ = (out / "summary.json").read_text(), [], capsys.readouterr()
    assert main([*TINY, "--strategies", "uniform,coba", "--output-dir", str(out), *change]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"holds runs of 'uniform' made with {setting}" in err[0] and "--output-dir" in err[0]
    assert calls == [] and (out / "summary.json").read_text() == before  # refused before any work


def test_a_damaged_run_file_is_run_again(tmp_path, calls, capsys):
    out = tmp_path / "cmp"
    assert main([*TINY, "--strategies", "uniform", "--output-dir", str(out)]) == 0
    whole = _report(out)
    torn = run_file(out, "uniform", 1)
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    calls.clear()
    assert main([*TINY, "--strategies", "uniform", "--output-dir", str(out)]) == 0
    assert calls == [("uniform", 1)] and f"{torn} is damaged" in capsys.readouterr().err
    assert _report(out) == whole and json.loads(torn.read_text())["seed"] == 1


def test_real_runs_are_keyed_by_the_train_config(monkeypatch, tmp_path, capsys):
    """On the real back-end the settings are cobarl train's resolved config: another --train-args task is refused."""
    from cobarl.experiments.comparison import real

    folders = []

    def run_training(config):
        folders.append(config["output_dir"])
        rows = [{"step": k + 1, "budget/total": 64.0, "rollout/effective_ratio": 0.5, "eval/heldout_accuracy": 0.1 * k}
                for k in range(3)]
        return {"rows": rows, "summary": {"initial_heldout_accuracy": 0.05, "final_heldout_accuracy": 0.2}}

    monkeypatch.setattr(real, "run_training", run_training)
    args = ["--backend", "real", "--steps", "3", "--prompts-per-step", "8", "--rollouts-per-prompt", "8", "--seeds", "1",
            "--workers", "1", "--no-progress", "--no-plots", "--output-dir", str(tmp_path / "cmp"), "--strategies"]
    assert main([*args, "uniform", "--train-args", "--task arith-v3"]) == 0
    assert main([*args, "uniform,coba", "--train-args", "--task arith-v3"]) == 0
    assert [r["reused"] for r in read_summary(tmp_path / "cmp" / "summary.json").runs] == [True, False]
    # every run's cobarl train folder is inside the comparison's own (nothing in the caller's runs/)
    assert folders == [str(tmp_path / "cmp" / "train" / "uniform-seed0"), str(tmp_path / "cmp" / "train" / "coba-seed0")]
    capsys.readouterr()
    assert main([*args, "uniform,coba", "--train-args", "--task families-v4"]) == 2
    assert "made with train.task = 'arith-v3'; this command runs it with train.task = 'families-v4'" in capsys.readouterr().err


def test_a_run_its_policy_stops_ends_the_comparison_naming_it_and_keeps_the_finished_runs(monkeypatch, tmp_path, capsys):
    simulated = BACKENDS["simulated"]

    def stops_on_coba_seed_1(spec, seed, options):
        if (spec.label, seed) == ("coba", 1):
            raise RuntimeError("nearly every group has one reward value")
        return simulated(spec, seed, options)

    monkeypatch.setitem(BACKENDS, "simulated", stops_on_coba_seed_1)
    out = tmp_path / "cmp"
    assert main([*TINY, "--strategies", "uniform,coba", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: strategy 'coba', seed 1: nearly every group has one reward value" in err and "the same command continues" in err
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["coba-seed0.json", "uniform-seed0.json", "uniform-seed1.json"]
