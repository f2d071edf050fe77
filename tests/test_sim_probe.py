"""The simulated probe (cobarl.experiments.simulation.sim_probe), the simulator presets and scripts/calibrate_simulator.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from cobarl.experiments.simulation.sim_probe import cluster_means, curve_shares, expected_histogram, run_sim_probe
from cobarl.experiments.simulation.sim_presets import SIM_PRESETS
from cobarl.experiments.simulation.sim_model import SimConfig, cluster_skills_from_pass_rates, make_task
from cobarl.experiments.simulation.simulator import SimOptions
from cobarl.tasks.families import MISTAKE_RATES

# A small task with clusters of distinct, known starting skills: 8 clusters x 8 train prompts.
SMALL = SimConfig(train_prompts=64, heldout_prompts=64, validation_prompts=8, clusters=8, difficulty_std=0.3,
                  cluster_skills=cluster_skills_from_pass_rates([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4]))


def small(lr: float = 0.3, transfer: float = 0.0, steps: int = 40) -> SimOptions:
    return SimOptions(steps=steps, prompts_per_step=16, rollouts_per_prompt=8, sim=replace(SMALL, lr=lr, transfer=transfer))


def test_placebo_is_about_one_and_the_probe_above_it_without_transfer():
    runs = [run_sim_probe(small(), seed) for seed in range(6)]
    placebo = [r["ratios"]["placebo"]["train"] for r in runs]
    probe = [r["ratios"]["probe"]["train"] for r in runs]
    assert all(math.isfinite(x) for x in placebo + probe)
    assert abs(np.mean(placebo) - 1.0) < 0.3  # the split alone: no effect on average
    assert np.mean(probe) > 1.5 and min(probe) > 1.0  # 3x the rollouts, no transfer: the favoured half gains more
    assert all(len(r["favoured_clusters"]) == 4 for r in runs)
    # without transfer, held-out prompts (cluster skill only) do not move at all: no ratio to read
    assert all(math.isnan(r["ratios"]["probe"]["held_out"]) for r in runs)


def test_probe_reaches_held_out_prompts_through_transfer_and_is_reproducible():
    a, b = run_sim_probe(small(transfer=0.5), 0), run_sim_probe(small(transfer=0.5), 0)
    assert a == b or json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    assert a["ratios"]["probe"]["held_out"] > 1.0
    assert 0.5 < a["uniform"]["heldout_train_gain_ratio"] <= 1.05
    with pytest.raises(ValueError, match="weight"):
        run_sim_probe(small(), 0, weight=1.0)


def test_pure_measures():
    assert expected_histogram(np.array([0.0, 1.0, 0.0, 1.0])) == {"hist_0": 0.5, "hist_1_4": 0.0, "hist_16": 0.5}
    s = curve_shares(np.array([0.1, 0.1, 0.3, 0.5]), 0.1, 2)
    assert s["gain"] == pytest.approx(0.4) and s["epoch1_share"] == 0.0 and s["second_half_share"] == pytest.approx(1.0)
    assert math.isnan(curve_shares(np.array([0.2, 0.2]), 0.2, 1)["epoch1_share"])  # no gain: no share, not 0
    with pytest.raises(ValueError):
        curve_shares(np.array([0.2, 0.3]), 0.2, 3)
    assert cluster_means(np.array([0.2, 0.4, 1.0]), np.array([0, 0, 1])) == pytest.approx({0: 0.3, 1: 1.0})


def test_cluster_skills_are_checked():
    assert cluster_skills_from_pass_rates([0.5])[0] == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cluster_skills_from_pass_rates([1.2])
    with pytest.raises(ValueError, match="one per cluster"):
        SimConfig(clusters=3, cluster_skills=(0.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        SimConfig(clusters=2, cluster_skills=(0.0, float("inf")))
    # the default task's draws do not depend on the new field
    t0, t1 = make_task(SimConfig(), 0), make_task(SimConfig(cluster_skills=None), 0)
    assert np.array_equal(t0.difficulty, t1.difficulty) and np.array_equal(t0.skill0, t1.skill0)


def test_presets_load():
    assert SIM_PRESETS["default"] == SimOptions()  # the documented defaults, unchanged
    v4 = SIM_PRESETS["families-v4"]
    assert (v4.sim.clusters, v4.sim.train_prompts, v4.sim.heldout_prompts) == (24, 384, 512)
    assert (v4.steps, v4.prompts_per_step, v4.total_budget()) == (300, 16, 128)
    assert len(v4.sim.cluster_skills) == len(MISTAKE_RATES)
    assert list(v4.sim.cluster_skills) == sorted(v4.sim.cluster_skills, reverse=True)  # easiest family first, as q


def test_compare_cli_preset(tmp_path):
    from cobarl.experiments.comparison.cli import main

    out = tmp_path / "v4"
    assert main(["--sim-preset", "families-v4", "--strategies", "uniform", "--seeds", "1", "--steps", "30",
                 "--no-plots", "--no-progress", "--workers", "1", "--output-dir", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["prompts_per_step"] == 16 and s["simulator"]["clusters"] == 24 and s["steps"] == 30
    assert s["simulator"]["lr"] == SIM_PRESETS["families-v4"].sim.lr
    for bad in (["--clusters", "32"], ["--skill-mean", "0"], ["--backend", "real"]):
        assert main(["--sim-preset", "families-v4", *bad, "--output-dir", str(tmp_path / "x")]) == 2


def _targets(tmp_path: Path, **change) -> Path:
    t = json.loads((REPO / "scripts" / "targets-v4.json").read_text())
    t.update(change)
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(t))
    return path


def test_calibration_script_runs_on_a_tiny_grid(tmp_path):
    out = tmp_path / "fit.json"
    cmd = [sys.executable, str(REPO / "scripts" / "calibrate_simulator.py"), "--targets", str(_targets(tmp_path)),
           "--seeds", "1", "--skill-offset=-0.4", "--difficulty-std", "0.5,1", "--lr", "0.2", "--transfer", "0.5",
           "--json", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "chosen: lr=0.2 transfer=0.5" in r.stdout and "families_v4_options(" in r.stdout
    fit = json.loads(out.read_text())
    assert fit["chosen"]["lr"] == 0.2 and len(fit["task"]["grid"]) == 2
    assert "difficulty_std" in fit["at_grid_edge"] or fit["chosen"]["difficulty_std"] == 0.5


@pytest.mark.parametrize("change,message", [
    ({"hist_0": "a lot"}, "finite numbers"),
    ({"probe_ratio": 2.0}, "unknown key"),
    ({"uniform_sampled_after": 0.3}, "must exceed"),
    ({"hist_16": 0.9}, "exceeds 1"),
])
def test_calibration_script_refuses_bad_targets(tmp_path, change, message):
    cmd = [sys.executable, str(REPO / "scripts" / "calibrate_simulator.py"), "--targets", str(_targets(tmp_path, **change))]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and message in r.stderr
