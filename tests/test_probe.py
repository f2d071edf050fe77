"""`cobarl probe`: the stratified split, the fixed 3:1 allocation, the ratios and verdict, the command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import run_module

from cobarl.experiments.comparison.probe import (
    ProbeAllocator,
    half_gains,
    ratio,
    stratified_half,
    unit_rates,
    verdict,
    weighted_counts,
)


def test_stratified_half_takes_one_of_each_neighbouring_pair():
    rates = {u: r for u, r in zip(range(24), np.linspace(0, 1, 24))}
    for seed in range(5):
        fav = stratified_half(rates, seed)
        assert len(fav) == 12
        assert all(len(fav & {2 * i, 2 * i + 1}) == 1 for i in range(12))  # both halves span the range
    assert stratified_half(rates, 0) == stratified_half(rates, 0) != stratified_half(rates, 1)
    assert len(stratified_half({"a": 0.1, "b": 0.2, "c": 0.3}, 0)) in (1, 2)


@pytest.mark.parametrize("n_fav,total", [(8, 128), (13, 128), (3, 128), (0, 64), (16, 64)])
def test_weighted_counts_sum_and_ratio(n_fav, total):
    fav = [True] * n_fav + [False] * (16 - n_fav)
    counts = weighted_counts(fav, total, 3.0)
    assert counts.sum() == total and (counts >= 1).all()
    if 0 < n_fav < 16:  # within rounding, exactly 3:1
        assert abs(counts[:n_fav].mean() / counts[n_fav:].mean() - 3.0) < 0.5
    with pytest.raises(ValueError, match="without a rollout"):
        weighted_counts([True] + [False] * 15, 16, 3.0)


def test_probe_allocator_plans_the_weights_and_keeps_statistics():
    from cobarl.policies import StrategyConfig

    alloc = ProbeAllocator(StrategyConfig(strategy="uniform"), favoured_ids={0, 1}, weight=3.0)
    plan = alloc.plan([0, 1, 2, 3], 16)
    assert plan.counts.tolist() == [6, 6, 2, 2] and plan.method == "probe"
    alloc.observe([0] * 6 + [2] * 2, np.array([1.0] * 6 + [0.0] * 2))
    assert "budget/max" in alloc.metrics() and alloc.state_dict()["stats"]


def test_gains_ratios_and_verdict():
    scores = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=float)
    assert unit_rates(scores, ["a", "a", "b", "b"]) == {"a": 0.25, "b": 0.75}
    before, after = {"a": 0.1, "b": 0.1, "c": 0.2, "d": 0.2}, {"a": 0.5, "b": 0.2, "c": 0.6, "d": 0.3}
    assert half_gains(before, after, {"a", "c"}) == pytest.approx((0.4, 0.1))
    assert ratio((0.4, 0.1)) == pytest.approx(4.0) and math.isnan(ratio((0.4, 0.0))) and math.isnan(ratio((0.4, -0.1)))
    ok = verdict([2.0, 2.5, 2.2], [1.0, 0.9, 1.1], min_ratio=1.5)
    assert ok["passed"] and ok["probe"]["ci95"][0] > 1
    assert not verdict([2.0, 2.5, 2.2], [2.0, 2.6, 2.1], 1.5)["passed"]  # no better than the placebo
    assert not verdict([1.4, 1.45, 1.42], [1.0, 1.0, 1.0], 1.5)["passed"]  # below the required ratio
    assert not verdict([2.0, math.nan, 2.2], [1.0, 1.0, 1.0], 1.5)["passed"]  # a seed without a ratio


def _cli(*args: str, timeout: float = 600):
    return run_module("cobarl.cli", "probe", *args, timeout=timeout)


@pytest.mark.parametrize("args,message", [
    (["--seeds", "1"], "at least 2 distinct seeds"),
    (["--allocator", "coba"], "strategy is set by the probe"),
    (["--max-budget", "8"], "strategy options have no effect"),
    (["--seed", "3"], "seed is set by the probe"),
    (["--weight", "1"], "--weight and --min-ratio must be > 1"),
    (["--max-steps", "0"], "max_steps must be an integer >= 1"),
    (["--task", "v9"], "invalid choice"),
])
def test_cli_refuses_bad_options_before_any_work(tmp_path, args, message):
    res = _cli("--output-dir", str(tmp_path / "p"), *args, timeout=120)
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_cli_end_to_end_writes_ratios_for_every_seed(tmp_path, families_model_dir):
    pytest.importorskip("trl")
    out = tmp_path / "probe"
    res = _cli("--seeds", "2", "--workers", "1", "--output-dir", str(out), "--model", str(families_model_dir),
               "--max-steps", "2",
               "--save-steps", "2", "--train-size", "24", "--eval-size", "24", "--prompts-per-step", "4",
               "--rollouts-per-prompt", "4", "--learning-rate", "1e-2")
    assert res.returncode in (0, 1), res.stderr[-3000:]  # 1: the check ran and the task failed it
    summary = json.loads((out / "summary.json").read_text())
    assert summary["units"] == "families" and summary["seeds"] == [0, 1] and set(summary["verdict"]) == {"train", "held_out"}
    for row in summary["per_seed"]:
        assert row["probe"]["rollouts"] == row["placebo"]["rollouts"] == 2 * 16  # same total, other split
    budgets = [json.loads(line)["budget/max"] for line in (out / "runs" / "probe-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert max(budgets) > 4  # the favoured prompts got more than the uniform 4
    assert "allocation sensitivity" in res.stdout and (out / "report.md").is_file()
    again = _cli("--seeds", "2", "--output-dir", str(out), "--model", str(families_model_dir), timeout=120)
    assert again.returncode == 2 and "already holds a probe" in again.stderr
