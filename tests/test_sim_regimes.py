"""The simulator's task regimes: unreachable clusters of both kinds, and the families-uXX presets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from cobarl.experiments.simulation.sim_presets import SIM_PRESETS, V4_LEARNER, families_v4_options
from cobarl.experiments.simulation.sim_model import SimConfig
from cobarl.experiments.simulation.simulator import SimOptions, SimRun, simulate
from cobarl.experiments.comparison.specs import parse_strategy
from cobarl.tasks.embedded import REGIMES

# sha256 (first 16 hex) of (rows, summary without its wall-clock seconds) of a 40-step families-v4 run
# on seed 0, computed on the code before the regimes existed (commit 965e03a): v4 must stay bit-identical.
# dapo re-pinned when it began to train verl's GRPO advantage in float32 operations (its own baselines; before:
# the simulator's float64 group advantage, equal up to rounding: 0.41979800034129156, "566ed357578f7174").
V4_PINNED = {
    "uniform": (0.3904893405680601, "b9cf770965e78ee2"),
    "coba": (0.41504611309491474, "4fbad0798382008d"),
    "reinforce-ada": (0.41241433878422773, "294938ceb4267c34"),
    "dapo": (0.41979800056179684, "81aff92c9437ceea"),
}


@pytest.mark.parametrize("label", list(V4_PINNED))
def test_families_v4_preset_is_bit_identical_to_before_the_regimes(label):
    options = replace(SIM_PRESETS["families-v4"], steps=40)
    rows, summary = simulate(parse_strategy(label).strategy_config(options.steps), 0, options)
    summary.pop("seconds")
    digest = hashlib.sha256(json.dumps([rows, summary], sort_keys=True, default=float).encode()).hexdigest()[:16]
    assert (summary["final_heldout_accuracy"], digest) == V4_PINNED[label]


def test_regime_presets_are_the_task_regimes_with_v4s_learner():
    v4 = SIM_PRESETS["families-v4"].sim
    assert SIM_PRESETS["families-v4"] == families_v4_options(**V4_LEARNER)
    for name, regime in REGIMES.items():
        sim = SIM_PRESETS[name].sim
        assert set(sim.beyond_reach) == regime.beyond_reach and set(sim.wrong_reference) == regime.wrong_reference
        assert (sim.lr, sim.transfer, sim.difficulty_std) == (v4.lr, v4.transfer, v4.difficulty_std)
        reachable = [k for k in range(sim.clusters) if k not in regime.unreachable]
        assert [sim.cluster_skills[k] for k in reachable] == [v4.cluster_skills[k] for k in reachable]
    assert SIM_PRESETS["families-u50"].sim.beyond_reach == (20, 22)
    assert SIM_PRESETS["families-u90"].sim.wrong_reference == (15, 17, 19, 21, 23)


# Four clusters, all starting near p = 0.5 with no spread: 0 beyond reach, 1 wrong reference, 2 and 3 reachable.
REGIME_SIM = SimConfig(train_prompts=64, heldout_prompts=32, validation_prompts=16, clusters=4, difficulty_std=0.0,
                       cluster_skills=(0.0, 0.0, 0.0, 0.0), transfer=1.0, lr=0.2, beyond_reach=(0,), wrong_reference=(1,))


@pytest.mark.parametrize("label", ["uniform", "coba", "reinforce-ada", "dapo"])
def test_unreachable_clusters_never_reward_and_never_learn(label):
    """Every reward 0 and every pass rate 0 on train, held-out and validation prompts, from the first step to
    the last, whatever the policy; even with all of a step going to the cluster (transfer 1) its skill and its
    prompts' own terms stay where they started, while the reachable clusters with the same start learn."""
    options = SimOptions(steps=12, prompts_per_step=16, rollouts_per_prompt=8, sim=REGIME_SIM)
    run = SimRun(parse_strategy(label).strategy_config(options.steps), 0, options)
    task, learner = run.task, run.learner
    dead = np.isin(task.cluster, [0, 1])
    assert run.summary([])["initial_heldout_accuracy"] == pytest.approx(0.5 * (1 - dead[task.n_train:].mean()))
    for step in range(options.steps):
        run.step(step)
        assert (learner.pass_rates()[dead] == 0).all()
        assert (learner.validation_pass_rates()[np.isin(task.validation_cluster, [0, 1])] == 0).all()
    assert (learner.skill[:2] == task.skill0[:2]).all() and (learner.own[dead] == 0).all()
    assert (learner.skill[2:] > task.skill0[2:] + 0.1).all()  # the same start, reachable: it learned


def test_regime_config_is_checked():
    with pytest.raises(ValueError, match="beyond_reach: cluster indices"):
        SimConfig(clusters=4, beyond_reach=(4,))
    with pytest.raises(ValueError, match="one kind"):
        SimConfig(clusters=4, beyond_reach=(1,), wrong_reference=(1, 2))


def test_compare_cli_selects_a_regime_preset(tmp_path):
    from cobarl.experiments.comparison.cli import main

    out = tmp_path / "u50"
    assert main(["--sim-preset", "families-u50", "--strategies", "uniform", "--seeds", "1", "--steps", "5",
                 "--no-plots", "--no-progress", "--workers", "1", "--output-dir", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["simulator"]["beyond_reach"] == [20, 22] and s["simulator"]["wrong_reference"] == [21, 23]
    assert s["simulator"]["lr"] == V4_LEARNER["lr"] and s["steps"] == 5
