"""Tests of `cobarl compare`: the simulator, the compare loop, the report files and the CLI."""

from __future__ import annotations

import csv
import json
import sys
import types
from dataclasses import replace

import numpy as np
import pytest

from cobarl.allocation.baselines import uniform as uniform_counts
from cobarl.allocator import AllocatorConfig
from cobarl.experiments import CompareOptions, SimConfig, SimOptions, parse_strategies, parse_strategy, run_compare, simulate
from cobarl.experiments.cli import main
from cobarl.experiments.report import FILES, PLOTS, mean_ci, write_report
from cobarl.experiments.simulator import (
    BUCKETS,
    Learner,
    batch_order,
    make_task,
    rollout_uniforms,
)

TINY_SIM = SimConfig(train_prompts=64, heldout_prompts=16, clusters=4)
TINY = SimOptions(steps=12, prompts_per_step=8, rollouts_per_prompt=8, sim=TINY_SIM)
TINY_ARGS = [
    "--steps", "12", "--prompts-per-step", "8", "--rollouts-per-prompt", "8",
    "--train-prompts", "64", "--heldout-prompts", "16", "--clusters", "4",
    "--seeds", "2", "--workers", "1", "--no-progress",
]


def _rows(strategy, seed=0, options=TINY, **kw):
    return simulate(AllocatorConfig(strategy=strategy, total_steps=options.steps, **kw), seed, options)


def test_simulator_is_deterministic_for_a_seed():
    a, sa = _rows("coba")
    b, sb = _rows("coba")
    c, _ = _rows("coba", seed=1)
    assert a == b
    sa.pop("seconds"), sb.pop("seconds")
    assert sa == sb
    assert a != c


def test_uniform_strategy_equals_a_callable_returning_uniform_counts():
    def same_as_grpo(p, total, lo, hi):
        return uniform_counts(p.size, total)

    a, sa = _rows("uniform")
    b, sb = _rows(same_as_grpo)
    assert a == b  # every metric of every step, bit for bit
    assert sa["transitions"] == sb["transitions"]


def test_uniform_allocation_matches_a_direct_fixed_group_grpo_loop():
    """Plain GRPO written with reshape(-1, G), as TRL does, gives the simulator's numbers."""
    opts = TINY
    rows, _ = _rows("uniform", seed=3, options=opts)
    task = make_task(opts.sim, 3)
    learner = Learner(task, opts.sim)
    m, g = opts.prompts_per_step, int(opts.rollouts_per_prompt)
    order = batch_order(3, task.n_train, m, opts.steps)
    heldout = np.arange(task.n_train, task.difficulty.size)
    for step in range(opts.steps):
        batch = order[step]
        p = learner.pass_rates(batch)
        u = rollout_uniforms(3, step, m, 128)[:, :g]
        r = (u < p[:, None]).astype(np.float64)  # [M, G]
        mean = r.mean(axis=1, keepdims=True)
        std = r.std(axis=1, ddof=1, keepdims=True)
        mixed = r.max(axis=1) != r.min(axis=1)
        adv = np.where(mixed[:, None], (r - mean) / (std + 1e-6), 0.0)
        # token-mean over M * G rollouts, times M: the per-prompt mean of A (y - p)
        signal = (adv * (r - p[:, None])).sum(axis=1) / g
        learner.step(batch, signal)
        assert rows[step]["rollout/effective_ratio"] == pytest.approx(mixed.mean(), abs=1e-12)
        assert rows[step]["eval/heldout_accuracy"] == pytest.approx(learner.pass_rates(heldout).mean(), rel=1e-12)
        assert rows[step]["reward/mean"] == pytest.approx(r.mean(), abs=1e-12)


def test_budget_contract_and_multiplier():
    rows, summary = simulate(AllocatorConfig(strategy="coba", total_steps=TINY.steps), 0, TINY, budget_multiplier=0.5)
    assert all(r["budget/total"] == 8 * 8 * 0.5 for r in rows)
    assert summary["rollouts"] == 12 * 32
    assert np.asarray(summary["transitions"]).sum() == TINY_SIM.train_prompts
    assert len(summary["transitions"]) == len(BUCKETS)


def test_learning_moves_heldout_through_clusters_only():
    rows, summary = _rows("uniform", options=replace(TINY, steps=24))
    assert rows[-1]["eval/heldout_accuracy"] > summary["initial_heldout_accuracy"]
    frozen, s0 = _rows("uniform", options=replace(TINY, sim=replace(TINY_SIM, transfer=0.0)))
    assert frozen[-1]["eval/heldout_accuracy"] == pytest.approx(s0["initial_heldout_accuracy"], abs=1e-12)


def test_parse_strategy():
    s = parse_strategy("fixed-beta-1.5-10.5")
    assert (s.strategy, s.overrides) == ("fixed-beta", {"fixed_alpha": 1.5, "fixed_beta": 10.5})
    s = parse_strategy("coba:kappa=7,tau=adaptive@0.5")
    assert (s.strategy, s.overrides, s.budget_multiplier) == ("coba", {"kappa": 7.0, "tau": "adaptive"}, 0.5)
    assert parse_strategy("coba-reference").overrides == {"tau": "adaptive"}
    assert len(parse_strategies(["default"])) == 8
    with pytest.raises(ValueError, match="valid: .*coba"):
        parse_strategy("cobra")
    with pytest.raises(ValueError, match="key=value"):
        parse_strategy("coba:kapa=7")
    with pytest.raises(ValueError, match="twice"):
        parse_strategies(["uniform,uniform"])


def test_options_reject_budget_outside_bounds():
    with pytest.raises(ValueError, match="outside"):
        CompareOptions(strategies=(parse_strategy("coba@0.1"),), rollouts_per_prompt=16)


def test_mean_ci_hand_worked():
    # mean 2, sd 1, n 3: half-width = t_{0.975, 2} * 1 / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    r = mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["half_width"] == pytest.approx(2.4841, abs=1e-4)
    assert mean_ci([5.0])["half_width"] != mean_ci([5.0])["half_width"]  # NaN for one value


def test_report_files_are_produced_and_well_formed(tmp_path):
    out = tmp_path / "cmp"
    rc = main([*TINY_ARGS, "--strategies", "uniform,coba,knapsack-rl,coba@0.5", "--output-dir", str(out)])
    assert rc == 0
    for name in (*FILES, *PLOTS):
        assert (out / name).is_file(), name
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "uniform" and summary["seeds"] == [0, 1]
    assert set(summary["strategies"]) == {"uniform", "coba", "knapsack-rl", "coba@0.5"}
    e = summary["strategies"]["coba"]
    for key in ("final_heldout_accuracy", "final_train_solved", "effective_ratio", "rollouts", "rollouts_to_target"):
        assert set(e[key]) >= {"mean", "ci95", "half_width", "n"}
    assert e["rollouts"]["mean"] == 12 * 64
    assert summary["gaps_vs_baseline"]["coba@0.5"]["rollouts_ratio"]["mean"] == pytest.approx(0.5)
    assert np.allclose(np.sum(e["transitions_percent"], axis=1), 100, atol=0.05)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 2 * 12
    assert {"strategy", "seed", "step", "rollouts", "eval/heldout_accuracy", "rollout/effective_ratio", "capability/alpha"} <= set(rows[0])
    md = (out / "report.md").read_text()
    assert "cobarl compare" in md and "![transitions.png](transitions.png)" in md and "| `coba@0.5` |" in md


def test_parallel_results_equal_serial():
    opts = CompareOptions(strategies=tuple(parse_strategies(["uniform,coba"])), seeds=(0, 1), steps=6,
                          prompts_per_step=8, rollouts_per_prompt=8, sim=TINY_SIM, workers=1)
    serial = run_compare(opts, progress=False)
    parallel = run_compare(replace(opts, workers=2), progress=False)
    assert [(r.label, r.seed, r.rows) for r in serial] == [(r.label, r.seed, r.rows) for r in parallel]


def test_real_backend_missing_gives_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "cobarl.train.run", types.ModuleType("cobarl.train.run"))
    assert main([*TINY_ARGS, "--backend", "real", "--strategies", "uniform", "--output-dir", str(tmp_path)]) == 2
    assert "needs the `train` extras" in capsys.readouterr().err


def test_real_backend_contract(monkeypatch, tmp_path):
    seen = []

    def run_training(config):
        seen.append(config)
        rows = [{"step": k + 1, "budget/total": 64.0, "rollout/effective_ratio": 0.5, "eval/heldout_accuracy": 0.1 * k}
                for k in range(3)]
        return {"rows": rows, "summary": {"initial_heldout_accuracy": 0.05, "final_heldout_accuracy": 0.2}}

    from cobarl.experiments import real

    monkeypatch.setattr(real, "run_training", run_training)
    opts = CompareOptions(strategies=tuple(parse_strategies(["uniform,coba@0.5"])), seeds=(0,), steps=3,
                          prompts_per_step=8, rollouts_per_prompt=8, backend="real")
    runs = run_compare(opts, progress=False)
    assert [c["allocator"] for c in seen] == ["uniform", "coba"] and seen[1]["rollouts_per_prompt"] == 4
    summary = write_report(runs, opts, tmp_path, plots=False)
    assert summary["accuracy_metric"] == "eval/heldout_accuracy"
    assert summary["strategies"]["uniform"]["rollouts"]["mean"] == 192


def test_heap_and_exact_coba_give_the_same_run():
    # Algorithm 1 literally (max-heap) and the exact threshold solver must agree step by step.
    a, _ = _rows("coba")
    b, _ = _rows("coba-heap")
    assert a == b


# --- cobarl compare: bad options, Ctrl-C, report module ----------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "nan"], "argument --lr: must be a finite number, got 'nan'"),
        (["--transfer", "inf"], "argument --transfer: must be a finite number"),
        (["--skill-std", "-1"], "argument --skill-std: must be >= 0"),
        (["--steps", "0"], "argument --steps: must be >= 1, got 0"),
        (["--seeds", "x"], "argument --seeds: expected an integer, got 'x'"),
        (["--workers", "0"], "argument --workers: must be >= 1"),
        (["--rollouts-per-prompt", "0"], "argument --rollouts-per-prompt: must be > 0"),
        (["--target-accuracy", "nan"], "argument --target-accuracy: must be a finite number"),
        (["--target-accuracy", "1.5"], "argument --target-accuracy: must be <= 1"),
    ],
)
def test_bad_numeric_options_stop_before_any_run(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.setattr("cobarl.experiments.cli.run_compare", _must_not_run)
    with pytest.raises(SystemExit) as exit_:
        main([*TINY_ARGS, *args, "--output-dir", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "coba:kappa=1"], "--strategies 'coba:kappa=1': kappa must be a finite number > 2"),
        (["--strategies", "coba:success=foo"], "--strategies 'coba:success=foo': success rule 'foo' is not understood"),
        (["--strategies", "coba:tau=abc"], "--strategies: could not convert string to float: 'abc'"),
        (["--strategies", "cobra"], "--strategies: unknown strategy 'cobra'"),
        (["--seed-list", "3,x"], "--seed-list takes comma-separated integers"),
        (["--prompts-per-step", "65"], "--prompts-per-step 65 exceeds --train-prompts 64"),
        (["--baseline", "nope"], "baseline 'nope' is not one of the strategies run"),
    ],
)
def test_bad_strategy_and_setting_combinations_get_a_message(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.setattr("cobarl.experiments.cli.run_compare", _must_not_run)
    assert main([*TINY_ARGS, *args, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_output_dir_is_refused_before_any_run(monkeypatch, capsys):
    monkeypatch.setattr("cobarl.experiments.cli.run_compare", _must_not_run)
    assert main([*TINY_ARGS, "--output-dir", "/dev/null/report"]) == 2
    assert "cannot write the report into /dev/null/report: /dev/null is not a folder" in capsys.readouterr().err


def _must_not_run(*args, **kwargs):
    raise AssertionError("the comparison started although an option was bad")


class _InterruptAfter:
    """Progress bar that presses Ctrl-C once ``n`` runs have finished."""

    def __init__(self, n: int) -> None:
        self.n = n

    def update(self, k: int = 1) -> None:
        self.n -= k
        if self.n == 0:
            raise KeyboardInterrupt

    def set_postfix_str(self, s: str) -> None: ...

    def close(self) -> None: ...


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_the_runs_and_keeps_the_finished_ones(monkeypatch, workers):
    import multiprocessing

    from cobarl.experiments import compare

    monkeypatch.setattr(compare, "_progress", lambda total, enabled: _InterruptAfter(2))
    opts = CompareOptions(strategies=tuple(parse_strategies(["uniform,coba"])), seeds=tuple(range(6)), steps=40,
                          prompts_per_step=8, rollouts_per_prompt=8, sim=TINY_SIM, workers=workers)
    with pytest.raises(compare.CompareInterrupted) as stop:
        compare.run_compare(opts)
    runs = stop.value.runs
    assert len(runs) == 2 and all(r.rows for r in runs)
    # the queued runs were cancelled and the running ones ended, not waited for
    assert multiprocessing.active_children() == []
    for run in runs:  # what was kept is what an uninterrupted run gives
        spec = next(s for s in opts.strategies if s.label == run.label)
        assert run.rows == compare.simulated_backend(spec, run.seed, opts).rows


def test_ctrl_c_in_the_cli_writes_the_finished_runs_and_exits_130(monkeypatch, capsys, tmp_path):
    from cobarl.experiments.compare import CompareInterrupted

    opts = CompareOptions(strategies=tuple(parse_strategies(["uniform"])), seeds=(0,), steps=12,
                          prompts_per_step=8, rollouts_per_prompt=8, sim=TINY_SIM, workers=1)
    finished = run_compare(opts, progress=False)

    def interrupted(options, progress=True):
        raise CompareInterrupted(finished)

    monkeypatch.setattr("cobarl.experiments.cli.run_compare", interrupted)
    out = tmp_path / "cmp"
    assert main([*TINY_ARGS, "--strategies", "uniform,coba", "--output-dir", str(out)]) == 130
    err = capsys.readouterr().err
    assert "1 of 4 runs finished" in err and f"{out}/report.md" in err and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["incomplete"] == {"finished_runs": 1, "planned_runs": 4,
                                     "missing": ["uniform seed 1", "coba seed 0", "coba seed 1"]}
    assert list(summary["strategies"]) == ["uniform"] and summary["strategies"]["uniform"]["seeds"] == [0]
    assert "Interrupted: 1 of 4 runs finished" in (out / "report.md").read_text()
    with open(out / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 12


def test_ctrl_c_before_any_run_finished_writes_nothing(monkeypatch, capsys, tmp_path):
    from cobarl.experiments.compare import CompareInterrupted

    def interrupted(options, progress=True):
        raise CompareInterrupted([])

    monkeypatch.setattr("cobarl.experiments.cli.run_compare", interrupted)
    assert main([*TINY_ARGS, "--output-dir", str(tmp_path / "cmp")]) == 130
    assert "nothing written" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_importing_the_report_module_leaves_the_umask_alone(monkeypatch):
    import importlib
    import os

    from cobarl.experiments import report

    def no_umask(mask):
        raise AssertionError("report.py changed the umask at import time")

    monkeypatch.setattr(os, "umask", no_umask)
    importlib.reload(report)
