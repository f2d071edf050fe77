"""Tests of `cobarl compare`: the simulator, the compare loop, the report files and the CLI."""

from __future__ import annotations

import csv
import json
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cobarl import group_advantages
from cobarl.allocation.baselines import uniform as uniform_counts
from cobarl.stats import BUCKETS
from cobarl.policies import StrategyConfig
from cobarl.experiments import (
    CompareOptions,
    RunResult,
    SimConfig,
    SimOptions,
    parse_strategies,
    parse_strategy,
    run_compare,
    simulate,
)
from cobarl.experiments.comparison.cli import main
from cobarl.experiments.report.figures import PLOTS
from cobarl.experiments.report.report import FILES, write_report
from cobarl.experiments.report.report_stats import mean_ci
from cobarl.experiments.simulation.sim_model import AdamScale, Learner, gradient_noise, grpo_signal, make_task
from cobarl.experiments.simulation.sim_rollouts import rollout_uniforms
from cobarl.experiments.simulation.simulator import batch_order

TINY_SIM = SimConfig(train_prompts=64, heldout_prompts=16, clusters=4)
TINY = SimOptions(steps=12, prompts_per_step=8, rollouts_per_prompt=8, sim=TINY_SIM)
TINY_ARGS = [
    "--steps", "12", "--prompts-per-step", "8", "--rollouts-per-prompt", "8",
    "--train-prompts", "64", "--heldout-prompts", "16", "--clusters", "4",
    "--seeds", "2", "--workers", "1", "--no-progress",
]


def _rows(strategy, seed=0, options=TINY, **kw):
    return simulate(StrategyConfig(strategy=strategy, total_steps=options.steps, **kw), seed, options)


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
    v = 0.0  # Adam's second moment, AdamW's beta2 = 0.999
    for step in range(opts.steps):
        batch = order[step]
        p = learner.pass_rates(batch)
        u = rollout_uniforms(3, step, m, 128)[:, :g]
        r = (u < p[:, None]).astype(np.float64)  # [M, G]
        mean = r.mean(axis=1, keepdims=True)
        std = r.std(axis=1, ddof=1, keepdims=True)
        mixed = r.max(axis=1) != r.min(axis=1)
        adv = np.where(mixed[:, None], (r - mean) / (std + 1e-6), 0.0)
        # token-mean gradient over N = M * G rollouts, divided by the RMS of its noise (1/N) sqrt(sum A^2)
        grad = (adv * (r - p[:, None])).sum(axis=1) / (m * g)
        v = 0.999 * v + 0.001 * (adv**2).sum() / (m * g) ** 2
        v_hat = v / (1 - 0.999 ** (step + 1))
        learner.step(batch, grad / np.sqrt(v_hat) if v_hat > 0 else 0 * grad)
        assert rows[step]["rollout/effective_ratio"] == pytest.approx(mixed.mean(), abs=1e-12)
        assert rows[step]["eval/heldout_accuracy"] == pytest.approx(learner.pass_rates(heldout).mean(), rel=1e-12)
        assert rows[step]["reward/mean"] == pytest.approx(r.mean(), abs=1e-12)


def test_twice_the_rollouts_move_a_logit_sqrt2_as_far():
    """Adam normalises by the gradient noise, which shrinks as 1/sqrt(N): the same outcome
    proportions from twice the rollouts give the same gradient and a sqrt(2) larger step."""
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # two mixed groups of 4
    p = np.array([0.4, 0.7])
    steps = []
    for copies in (1, 2):
        r, s = np.tile(rewards.reshape(2, 4), copies).ravel(), np.repeat([0, 1], 4 * copies)
        adv = group_advantages(r, s).advantages
        steps.append(AdamScale()(gradient_noise(adv)) * grpo_signal(adv, r, s, p))
    assert steps[1] == pytest.approx(np.sqrt(2) * steps[0], rel=1e-12)
    assert AdamScale()(0.0) == 0.0  # no mixed group yet: no step (and no division by zero)


def test_budget_contract_and_multiplier():
    rows, summary = simulate(StrategyConfig(strategy="coba", total_steps=TINY.steps), 0, TINY, budget_multiplier=0.5)
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
    assert parse_strategy("coba-reference").overrides == {}  # its strategy default is the public adaptive tau
    # a report names what an arm changes from the strategy's described settings
    assert parse_strategy("coba:tau=16@0.5").describe().endswith("(threshold solver); here tau = 16, at 0.5x budget")
    assert "here" not in parse_strategy("coba-reference").describe()
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


def test_rollouts_to_target_is_the_baselines_final_accuracy_on_the_same_seed(tmp_path):
    """Seed 1 is weaker on every arm: each seed is measured against its own baseline, not a pooled target."""
    def run(label, seed, accs):
        rows = [{"step": k + 1, "rollouts": 100.0 * (k + 1), "eval/heldout_accuracy": a} for k, a in enumerate(accs)]
        return RunResult(label, seed, rows, {"initial_heldout_accuracy": 0.0})

    runs = [run("uniform", 0, [0.5, 0.6, 0.7]), run("uniform", 1, [0.1, 0.2, 0.3]),
            run("coba", 0, [0.7, 0.7, 0.8]), run("coba", 1, [0.2, 0.3, 0.3])]
    opts = CompareOptions(strategies=tuple(parse_strategies(["uniform,coba"])), seeds=(0, 1), steps=3,
                          prompts_per_step=8, rollouts_per_prompt=8, workers=1)
    summary = write_report(runs, opts, tmp_path, plots=False)
    assert summary["baseline_final_by_seed"] == {"0": 0.7, "1": 0.3}
    assert summary["strategies"]["coba"]["rollouts_to_target"]["values"] == [100.0, 200.0]
    assert summary["strategies"]["uniform"]["rollouts_to_target"]["values"] == [300.0, 300.0]
    fixed = write_report(runs, replace(opts, target_accuracy=0.6), tmp_path / "fixed", plots=False)
    assert fixed["strategies"]["coba"]["rollouts_to_target"]["reached"] == 1  # seed 1 never gets to 0.6


def test_mean_ci_hand_worked():
    # mean 2, sd 1, n 3: half-width = t_{0.975, 2} * 1 / sqrt(3) = 4.3027 / 1.7321 = 2.4841
    r = mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["half_width"] == pytest.approx(2.4841, abs=1e-4)
    assert mean_ci([5.0])["half_width"] != mean_ci([5.0])["half_width"]  # NaN for one value


def test_report_files_are_produced_and_well_formed(tmp_path):
    out = tmp_path / "cmp"
    # --sim-accuracy: every figure, the accuracy one too (tests/test_sim_trust.py: the report without it)
    rc = main([*TINY_ARGS, "--sim-accuracy", "--strategies", "uniform,coba,knapsack-rl,coba@0.5", "--output-dir", str(out)])
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


def test_against_a_real_report_mirrors_its_arms_and_checks_the_simulator(tmp_path, capsys):
    """A simulated report relabelled "real" is mirrored run for run: the check must find a perfect
    match (rank correlation 1, every sign agreeing, equal gaps); options it takes may not be given."""
    real = tmp_path / "real"
    arms = "uniform,coba,knapsack-rl,uniform@0.5"
    assert main([*TINY_ARGS, "--strategies", arms, "--no-plots", "--output-dir", str(real)]) == 0
    summary = json.loads((real / "summary.json").read_text())
    (real / "summary.json").write_text(json.dumps({**summary, "backend": "real"}))
    sim_only = ["--train-prompts", "64", "--heldout-prompts", "16", "--clusters", "4", "--workers", "1",
                "--no-progress", "--no-plots"]
    out = tmp_path / "sim"
    assert main([*sim_only, "--against", str(real), "--output-dir", str(out)]) == 0
    mirrored = json.loads((out / "summary.json").read_text())
    assert list(mirrored["strategies"]) == arms.split(",") and mirrored["seeds"] == [0, 1]
    check = mirrored["simulator_check"]
    assert check["rank_correlation"] == {"final_heldout_accuracy": pytest.approx(1.0), "effective_ratio": pytest.approx(1.0)}
    assert check["heldout_gap_sign_agreement"] == "3/3" and check["order"]["simulated"] == check["order"]["real"]
    for arm in ("coba", "knapsack-rl", "uniform@0.5"):
        side = check["per_arm"][arm]
        assert side["simulated"] == side["real"]
    md = (out / "report.md").read_text()
    assert "## Simulator vs real back-end" in md and "| `uniform@0.5` |" in md
    # an arm is mirrored with the settings it ran with, under its own label (a real arm on the embedded
    # task runs with its preset max budget, which the simulator does not have)
    ran = {**summary["strategies"]["coba"], "allocator_config": {**summary["strategies"]["coba"]["allocator_config"], "max_budget": 16}}
    (real / "summary.json").write_text(json.dumps({**summary, "backend": "real", "strategies": {**summary["strategies"], "coba": ran}}))
    assert main([*sim_only, "--against", str(real), "--output-dir", str(tmp_path / "sim16")]) == 0
    mirrored = json.loads((tmp_path / "sim16" / "summary.json").read_text())["strategies"]
    assert mirrored["coba"]["allocator_config"]["max_budget"] == 16 and mirrored["uniform"]["allocator_config"]["max_budget"] == 128
    (real / "summary.json").write_text(json.dumps({**summary, "backend": "real"}))
    # refused before any run: an option --against takes, a report that is not a real one, no report
    assert main([*sim_only, "--against", str(real), "--steps", "12", "--output-dir", str(tmp_path / "x")]) == 2
    assert "--against takes --steps from the real comparison" in capsys.readouterr().err
    assert main([*sim_only, "--against", str(out), "--output-dir", str(tmp_path / "x")]) == 2
    assert "backend 'real'" in capsys.readouterr().err
    assert main([*sim_only, "--against", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "x")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main([*sim_only, "--against", str(real), "--backend", "real", "--output-dir", str(tmp_path / "x")]) == 2
    assert "--against runs the simulator" in capsys.readouterr().err
    (real / "summary.json").write_text(json.dumps({**summary, "backend": "real", "incomplete": {"missing": ["coba seed 1"]}}))
    assert main([*sim_only, "--against", str(real), "--output-dir", str(tmp_path / "x")]) == 2
    assert "stopped early" in capsys.readouterr().err
    # a report that does not say what its arms ran with cannot be mirrored faithfully
    old = {label: {k: v for k, v in e.items() if k != "allocator_config"} for label, e in summary["strategies"].items()}
    (real / "summary.json").write_text(json.dumps({**summary, "backend": "real", "strategies": old}))
    assert main([*sim_only, "--against", str(real), "--output-dir", str(tmp_path / "x")]) == 2
    assert "strategies['uniform'] lacks 'allocator_config'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


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

    from cobarl.experiments.comparison import real

    monkeypatch.setattr(real, "run_training", run_training)
    opts = CompareOptions(strategies=tuple(parse_strategies(["uniform,coba@0.5"])), seeds=(0,), steps=3,
                          prompts_per_step=8, rollouts_per_prompt=8, backend="real")
    runs = run_compare(opts, progress=False)
    assert [c["strategy"] for c in seen] == ["uniform", "coba"] and seen[1]["rollouts_per_prompt"] == 4
    assert all(c["transitions"] and c["eval_every"] == 1 for c in seen)  # transitions; accuracy at steps//6 (>= 1)
    summary = write_report(runs, opts, tmp_path, plots=False)
    assert summary["accuracy_metric"] == "eval/heldout_accuracy"
    assert summary["strategies"]["uniform"]["rollouts"]["mean"] == 192


def test_real_backend_sweep_chooses_on_cobarl_trains_validation_split(monkeypatch, tmp_path):
    """--grid on the real back-end asks every run for a validation split and chooses on it, not on held-out."""
    seen = []

    def run_training(config):
        seen.append(config)
        kappa = config.get("kappa", 11.0)
        # held-out favours kappa=15, validation favours kappa=7: the choice must follow validation
        final = {"eval/heldout_accuracy": 0.3 + 0.01 * kappa, "eval/validation_accuracy": 0.5 - 0.01 * kappa}
        rows = [{"step": 1, "budget/total": 64.0, "rollout/effective_ratio": 0.5, **final}]
        return {"rows": rows, "summary": {"initial_heldout_accuracy": 0.05}}

    from cobarl.experiments.comparison import real

    monkeypatch.setattr(real, "run_training", run_training)
    out = tmp_path / "sweep"
    assert main(["--backend", "real", "--strategies", "coba", "--grid", "kappa=7,15", "--seeds", "2", "--steps", "1",
                 "--prompts-per-step", "8", "--rollouts-per-prompt", "8", "--workers", "1", "--no-progress",
                 "--no-plots", "--validation-prompts", "64", "--output-dir", str(out)]) == 0
    assert len(seen) == 3 * 2 and all(c["validation_size"] == 64 for c in seen)
    grid = json.loads((out / "summary.json").read_text())["grid"]
    assert grid["chosen_values"] == {"kappa": 7.0}
    # the base is what cobarl train runs (its max budget is 32, not the simulator's 128): a grid point here
    seen.clear()
    assert main(["--backend", "real", "--strategies", "coba", "--grid", "max_budget=32,64", "--seeds", "1", "--steps", "1",
                 "--prompts-per-step", "8", "--rollouts-per-prompt", "8", "--workers", "1", "--no-progress",
                 "--no-plots", "--output-dir", str(tmp_path / "mb")]) == 0
    grid = json.loads((tmp_path / "mb" / "summary.json").read_text())["grid"]
    assert len(seen) == 2 and grid["base"] == "coba:max_budget=32" and grid["base_ran"]


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
    monkeypatch.setattr("cobarl.experiments.comparison.cli.run_compare", _must_not_run)
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
        (["--strategies", "coba:tau=abc"], "--strategies: bad option 'tau=abc' in 'coba:tau=abc': tau must be a finite number > 0 or 'adaptive', got 'abc'"),
        (["--strategies", "cobra"], "--strategies: unknown strategy 'cobra'"),
        (["--seed-list", "3,x"], "--seed-list takes comma-separated integers"),
        (["--prompts-per-step", "65"], "--prompts-per-step 65 exceeds --train-prompts 64"),
        (["--baseline", "nope"], "baseline 'nope' is not one of the strategies run"),
    ],
)
def test_bad_strategy_and_setting_combinations_get_a_message(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.setattr("cobarl.experiments.comparison.cli.run_compare", _must_not_run)
    assert main([*TINY_ARGS, *args, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_output_dir_is_refused_before_any_run(monkeypatch, capsys):
    monkeypatch.setattr("cobarl.experiments.comparison.cli.run_compare", _must_not_run)
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

    from cobarl.experiments.comparison import compare
    from cobarl.experiments.comparison.backends import simulated_backend

    monkeypatch.setattr(compare, "_progress", lambda total, enabled: _InterruptAfter(2))
    opts = CompareOptions(strategies=tuple(parse_strategies(["uniform,coba"])), seeds=tuple(range(6)), steps=40,
                          prompts_per_step=8, rollouts_per_prompt=8, sim=TINY_SIM, workers=workers)
    with pytest.raises(compare.CompareInterrupted) as stop:
        compare.run_compare(opts)
    runs = stop.value.runs
    assert len(runs) == 2 and all(r.rows for r in runs)
    # the queued runs were cancelled and the running ones ended, not waited for: no worker outlives
    # the interrupt (allowing a loaded 2-core machine a moment to reap them)
    deadline = time.monotonic() + 30
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert multiprocessing.active_children() == []
    for run in runs:  # what was kept is what an uninterrupted run gives
        spec = next(s for s in opts.strategies if s.label == run.label)
        assert run.rows == simulated_backend(spec, run.seed, opts).rows


def test_ctrl_c_in_the_cli_writes_the_finished_runs_and_exits_130(monkeypatch, capsys, tmp_path):
    from cobarl.experiments.comparison.compare import CompareInterrupted

    opts = CompareOptions(strategies=tuple(parse_strategies(["uniform"])), seeds=(0,), steps=12,
                          prompts_per_step=8, rollouts_per_prompt=8, sim=TINY_SIM, workers=1)
    finished = run_compare(opts, progress=False)

    def interrupted(options, progress=True, done=None, keep=None):
        raise CompareInterrupted([keep(run) for run in finished])  # stored as it finished

    monkeypatch.setattr("cobarl.experiments.comparison.cli.run_compare", interrupted)
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
    from cobarl.experiments.comparison.compare import CompareInterrupted

    def interrupted(options, progress=True, **kw):
        raise CompareInterrupted([])

    monkeypatch.setattr("cobarl.experiments.comparison.cli.run_compare", interrupted)
    assert main([*TINY_ARGS, "--output-dir", str(tmp_path / "cmp")]) == 130
    assert "nothing written" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_importing_the_report_module_leaves_the_umask_alone(monkeypatch):
    import importlib
    import os

    from cobarl.experiments.report import figures, markdown, report, report_stats

    def no_umask(mask):
        raise AssertionError("a report module changed the umask at import time")

    monkeypatch.setattr(os, "umask", no_umask)
    for module in (report_stats, figures, markdown, report):
        importlib.reload(module)


# --- tuning sweep: cobarl compare --grid -------------------------------------------------------


def test_validation_split_leaves_the_train_and_heldout_draws_alone():
    with_val = make_task(TINY_SIM, 5)
    other = make_task(replace(TINY_SIM, validation_prompts=3), 5)
    for name in ("cluster", "difficulty", "skill0"):
        assert np.array_equal(getattr(with_val, name), getattr(other, name))
    assert other.validation_difficulty.size == 3
    # never trained on: with no transfer it keeps its initial accuracy while held-out does too
    rows, _ = _rows("coba", options=replace(TINY, sim=replace(TINY_SIM, transfer=0.0)))
    assert len({r["eval/validation_accuracy"] for r in rows}) == 1
    rows, _ = _rows("coba")
    assert rows[0]["eval/validation_accuracy"] != rows[-1]["eval/validation_accuracy"]  # it moves through clusters


def test_parse_grid():
    from cobarl.experiments.comparison.grid import parse_grid

    assert parse_grid(["kappa=7,11;max-budget=32", "tau=adaptive,8"]) == {
        "kappa": (7.0, 11.0), "max_budget": (32,), "tau": ("adaptive", 8.0)}
    for bad, message in [
        ("kapa=7", "bad grid option 'kapa=7'; write option=v1,v2,... with option in: .*kappa"),
        ("kappa", "bad grid option"),
        ("strategy=coba", "bad grid option"),
        ("kappa=7;kappa=9", "option kappa is given twice"),
        ("kappa=7,,9", "kappa: empty value"),
        ("kappa=7,7", "kappa: a value repeats"),
        ("max_budget=6.5", "max_budget=6.5: max_budget must be an integer"),
        ("tau=x", "tau=x: tau must be a finite number > 0 or 'adaptive'"),
        (";", "empty grid"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_grid([bad])


def test_expand_grid_labels_order_and_base():
    from cobarl.experiments.comparison.grid import expand_grid

    specs, grid = expand_grid(parse_strategy("coba"), {"kappa": (7.0, 15.0), "max_budget": (32, 64)}, 10)
    labels = ["coba", "coba:kappa=7,max_budget=32", "coba:kappa=7,max_budget=64",
              "coba:kappa=15,max_budget=32", "coba:kappa=15,max_budget=64"]
    assert [s.label for s in specs] == labels and list(grid.points) == labels
    assert grid.base == "coba" and grid.on_grid == tuple(labels[1:])  # not a grid point: run as an extra arm
    assert grid.points["coba"] == {"kappa": 11.0, "max_budget": 128}
    for spec in specs[1:]:  # every label is itself a spec for the same configuration
        assert parse_strategy(spec.label).overrides == spec.overrides
    # a grid point equal to the base (defaults resolved: tau 8 for coba) is the base; nothing is run twice
    specs, grid = expand_grid(parse_strategy("coba:gamma=5@0.5"), {"kappa": (7.0, 11.0), "tau": (8.0, "adaptive")}, 10)
    assert len(specs) == 4 and grid.base == "coba:gamma=5,kappa=11,tau=8@0.5"
    assert specs[0].overrides == {"gamma": 5.0, "kappa": 7.0, "tau": 8.0} and specs[0].budget_multiplier == 0.5
    # a preset's own override (coba-reference: tau=adaptive) may be swept
    specs, _ = expand_grid(parse_strategy("coba-reference"), {"tau": (4.0,)}, 10)
    assert specs[-1].overrides == {"tau": 4.0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "kappa=7,1"], "--grid kappa=1: kappa must be a finite number > 2"),
        (["--grid", "window=0"], "--grid window=0: window must be an integer >= 1"),
        (["--grid", "tau=-1"], "--grid tau=-1: tau must be a finite number > 0"),
        (["--grid", "min_budget=4,16", "--grid", "max_budget=8,32"],
         "--grid coba:min_budget=16,max_budget=8: min_budget (16) is larger than max_budget (8)"),
        (["--grid", "max_budget=4"], "coba:max_budget=4: 8 rollouts per prompt on average is outside [min_budget, max_budget] = [2, 4]"),
        (["--grid", "kapa=7"], "--grid bad grid option 'kapa=7'"),
        (["--strategies", "uniform,coba", "--grid", "kappa=7"], "--grid sweeps the options of one strategy, its base configuration; --strategies gave 2"),
        (["--strategies", "coba:kappa=7", "--grid", "kappa=9"], "kappa is set both in --strategies 'coba:kappa=7' and in the grid"),
    ],
)
def test_bad_grid_is_refused_before_any_run(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.setattr("cobarl.experiments.comparison.cli.run_compare", _must_not_run)
    assert main([*TINY_ARGS, *args, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _grid_options(grid_text: str, strategy: str = "coba", seeds=(0, 1)) -> CompareOptions:
    from cobarl.experiments.comparison.grid import expand_grid, parse_grid

    specs, grid = expand_grid(parse_strategy(strategy), parse_grid([grid_text]), 12)
    return CompareOptions(strategies=tuple(specs), seeds=seeds, steps=12, prompts_per_step=8, rollouts_per_prompt=8,
                          sim=TINY_SIM, workers=1, grid=grid, baseline=grid.base)


def test_sweep_pairs_seeds_and_runs_each_configuration_as_labelled():
    from cobarl.experiments.comparison.backends import simulated_backend

    opts = _grid_options("kappa=7,15;max_budget=16,32")
    runs = run_compare(opts, progress=False)
    assert len(runs) == 5 * 2
    for seed in (0, 1):
        same_seed = [r for r in runs if r.seed == seed]
        assert {r.label for r in same_seed} == set(opts.grid.points)
        # the same task and held-out/validation prompts for every configuration of a seed
        assert len({r.summary["initial_heldout_accuracy"] for r in same_seed}) == 1
    run = next(r for r in runs if r.label == "coba:kappa=15,max_budget=16" and r.seed == 1)
    direct, _ = simulate(StrategyConfig(strategy="coba", kappa=15.0, max_budget=16, total_steps=12), 1, opts.sim_options())
    assert run.rows == direct
    assert simulated_backend(opts.strategies[0], 1, opts).rows == _rows("coba", seed=1)[0]  # the base arm


def _fake_run(label, seed, validation, heldout):
    rows = [{"step": 1, "rollouts": 64, "eval/heldout_accuracy": heldout, "eval/validation_accuracy": validation}]
    return RunResult(label, seed, rows, {"initial_heldout_accuracy": 0.1})


def test_selection_uses_validation_never_heldout():
    from cobarl.experiments.report.report_stats import summarise_comparison

    opts = _grid_options("kappa=7,15")
    # kappa=7 is best on validation, kappa=15 on held-out, by a wide margin on every seed
    accuracy = {"coba": (0.50, 0.50), "coba:kappa=7": (0.60, 0.40), "coba:kappa=15": (0.45, 0.70)}
    runs = [_fake_run(label, seed, v + 0.01 * seed, h + 0.01 * seed) for label, (v, h) in accuracy.items() for seed in (0, 1, 2)]
    g = summarise_comparison(runs, replace(opts, seeds=(0, 1, 2)))["grid"]
    assert g["chosen"] == "coba:kappa=7" and g["chosen_values"] == {"kappa": 7.0}
    assert g["selection_metric"] == "eval/validation_accuracy"
    assert [g["configs"][k]["validation_rank"] for k in accuracy] == [2, 1, 3]
    assert g["configs"]["coba:kappa=7"]["validation_gap_vs_base"]["mean"] == pytest.approx(0.10)
    assert g["configs"]["coba:kappa=7"]["heldout_gap_vs_base"]["mean"] == pytest.approx(-0.10)
    assert g["chosen_beats_base"] and not g["chosen_is_base"]
    # the base wins when it is best on validation, whatever held-out says
    runs = [_fake_run(label, seed, 0.9 if label == "coba" else 0.5, 0.1 if label == "coba" else 0.9) for label in accuracy for seed in (0, 1)]
    g = summarise_comparison(runs, opts)["grid"]
    assert g["chosen"] == "coba" and g["chosen_is_base"] and not g["chosen_beats_base"]


def test_selection_without_the_validation_metric_chooses_nothing():
    from cobarl.experiments.report.markdown import report_markdown
    from cobarl.experiments.report.report_stats import summarise_comparison

    opts = _grid_options("kappa=7")
    runs = [RunResult(label, 0, [{"step": 1, "rollouts": 64, "eval/heldout_accuracy": 0.5}], {}) for label in opts.grid.points]
    summary = summarise_comparison(runs, replace(opts, seeds=(0,)))
    assert summary["grid"]["chosen"] is None and summary["grid"]["missing_metric"]
    assert "nothing was chosen" in report_markdown(summary, [])


def test_grid_report_files(monkeypatch, tmp_path):
    from cobarl.experiments.report.figures import GRID_HEATMAP, grid_plot_name

    out = tmp_path / "grid"
    rc = main([*TINY_ARGS, "--strategies", "coba", "--grid", "kappa=7,11", "--grid", "max_budget=16,32", "--output-dir", str(out)])
    assert rc == 0
    # the accuracy figure only where the report shows accuracy (tests/test_sim_trust.py); the sweep's own always
    for name in (*FILES, *PLOTS[1:], grid_plot_name("kappa"), grid_plot_name("max_budget"), GRID_HEATMAP):
        assert (out / name).is_file(), name
    assert (out / GRID_HEATMAP).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    g = summary["grid"]
    assert summary["baseline"] == g["base"] == "coba"  # kappa 11 is on the grid, max_budget 128 is not
    assert g["options"] == {"kappa": [7.0, 11.0], "max_budget": [16, 32]} and len(g["configs"]) == 5
    assert all(e["seeds"] == [0, 1] for e in g["configs"].values())
    best = max(g["configs"], key=lambda k: g["configs"][k]["validation_accuracy"]["mean"])
    assert g["chosen"] == best
    md = (out / "report.md").read_text()
    assert f"**Chosen: `{best}`**" in md and "![grid_heatmap.png](grid_heatmap.png)" in md
    assert md.index("Chosen:") < md.index("Held-out accuracy of the chosen configuration")
    with open(out / "metrics.csv", newline="") as f:
        assert "eval/validation_accuracy" in next(csv.DictReader(f))
    # one option: line plot only
    out1 = tmp_path / "one"
    assert main([*TINY_ARGS, "--grid", "window=1,3", "--output-dir", str(out1)]) == 0
    assert (out1 / grid_plot_name("window")).is_file() and not (out1 / GRID_HEATMAP).exists()
    assert json.loads((out1 / "summary.json").read_text())["grid"]["base"] == "coba:window=1"


def test_a_spec_with_several_options_survives_the_comma_list():
    # a sweep's labels (coba:tau=16,window=5) can be passed back to --strategies as they are
    specs = parse_strategies(["coba:kappa=7,tau=adaptive@0.5,uniform", "coba:tau=16,window=5"])
    assert [(s.label, s.overrides) for s in specs] == [
        ("coba:kappa=7,tau=adaptive@0.5", {"kappa": 7.0, "tau": "adaptive"}), ("uniform", {}),
        ("coba:tau=16,window=5", {"tau": 16.0, "window": 5})]
    with pytest.raises(ValueError, match="unknown strategy 'tau=8'"):
        parse_strategies(["uniform,tau=8"])


def test_compare_train_args_reach_every_real_run_through_train_parser():
    from cobarl.experiments.comparison.cli_args import build_parser, options_from_args
    from cobarl.experiments.comparison.backends import real_run_options

    def options(*argv):
        return options_from_args(build_parser().parse_args(list(argv)))

    opts = options("--backend", "real", "--strategies", "uniform", "--seeds", "1", "--steps", "3", "--prompts-per-step", "4",
                   "--rollouts-per-prompt", "4", "--train-args", "--task arith-v3 --train-size 64 --cpu-threads 1 --learning-rate 3e-4")
    run = real_run_options(opts.strategies[0], 0, opts)
    assert (run["task"], run["train_size"], run["cpu_threads"], run["learning_rate"]) == ("arith-v3", 64, 1, 3e-4)
    with pytest.raises(ValueError, match="only the real back-end"):
        options("--train-args", "--train-size 64")
    with pytest.raises(ValueError, match="max_budget, seed set by compare itself"):
        options("--backend", "real", "--train-args", "--seed 3 --max-budget 8")
    with pytest.raises(ValueError, match="not valid cobarl train options"):
        options("--backend", "real", "--train-args", "--no-such-option 1")
    # a budget compare sets itself (the report would say one budget while the runs kept another)
    with pytest.raises(ValueError, match="max_generated set by compare itself.*--budget"):
        options("--backend", "real", "--train-args", "--max-generated 100")
    with pytest.raises(ValueError, match="--train-args '--task \"arith': cannot be split into options .*check its quotes"):
        options("--backend", "real", "--train-args", '--task "arith')


RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


# compare reports only (a probe report is another format)
@pytest.mark.parametrize("path", sorted(p for p in RESULTS.glob("**/summary.json") if not p.parent.name.startswith("probe-")),
                         ids=lambda p: p.parent.name)
def test_committed_summaries_read_whole_and_round_trip(path):
    """Every committed compare report reads through summary_io, and writing it back gives the same JSON
    (older ones, without format_version, read as version 0 and are written back as the version their keys
    make them, never the current one, whose keys they lack)."""
    from cobarl.experiments.report.summary_io import FORMAT_VERSION, read_summary, summary_text

    s = read_summary(path)
    assert s.baseline in s.strategies and s.strategies[s.baseline].allocator_config
    again = json.loads(summary_text(s))
    if "format_version" in json.loads(path.read_text()):  # written by a version that numbered its files
        assert s.format_version == s.layout_version() <= FORMAT_VERSION and again == json.loads(path.read_text())
        return
    assert s.format_version == 0
    assert again.pop("format_version") == s.layout_version() < FORMAT_VERSION and again == json.loads(path.read_text())
    assert read_summary(path).to_dict() == {**again, "format_version": s.layout_version()}


def test_summary_with_a_missing_or_renamed_key_is_refused_by_name(tmp_path):
    from cobarl.experiments.report.summary_io import FORMAT_VERSION, SummaryFormatError, read_summary

    good = json.loads((RESULTS / "real-v4-six-arms" / "summary.json").read_text())
    cases = {
        "final_heldout_accuracy": lambda d: d["strategies"]["coba"].pop("final_heldout_accuracy"),
        "effective_ratio_relative_percent": lambda d: d["gaps_vs_baseline"]["coba"].update(
            effective_ratio_rel_pct=d["gaps_vs_baseline"]["coba"].pop("effective_ratio_relative_percent")),
        "half_width": lambda d: d["strategies"]["uniform"]["effective_ratio"].pop("half_width"),
        "steps": lambda d: d.pop("steps"),
    }
    for key, damage in cases.items():
        d = json.loads(json.dumps(good))
        damage(d)
        (tmp_path / "summary.json").write_text(json.dumps(d))
        with pytest.raises(SummaryFormatError, match=f"lacks '{key}'"):
            read_summary(tmp_path / "summary.json")
    # version 1 needs what version 0 may lack; a newer version is refused, not half-read
    d = {k: v for k, v in good.items() if k != "baseline_final_by_seed"}
    (tmp_path / "summary.json").write_text(json.dumps({**d, "format_version": 1}))
    with pytest.raises(SummaryFormatError, match="lacks 'baseline_final_by_seed'"):
        read_summary(tmp_path / "summary.json")
    (tmp_path / "summary.json").write_text(json.dumps({**good, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(SummaryFormatError, match=f"format_version {FORMAT_VERSION + 1} is not one this cobarl reads"):
        read_summary(tmp_path / "summary.json")
    # a cobarl probe summary is not a comparison's
    with pytest.raises(SummaryFormatError, match="lacks 'backend'"):
        read_summary(RESULTS / "probe-v4" / "summary.json")
