"""Strategy-neutral measurements on the simulator: the probe, and what a uniform run shows.

These are the simulated counterparts of what is measured on a real task before any allocation
strategy is run on it (README "The embedded task"), so the simulator can be calibrated on them
alone (``scripts/calibrate_simulator.py``):

- the starting pass-rate histogram of the train prompts (16 samples: 0/16, 1-4/16, 16/16), here
  its expectation under the binomial (no sampling noise);
- uniform GRPO's held-out accuracy before and after, the share of its gain made in epoch 1 and in
  the second half of the run, and its held-out gain over its train gain;
- the probe (:mod:`cobarl.experiments.comparison.probe`): a fixed allocation giving a stratified random half
  of the *clusters* ``weight`` x the rollouts of the other half at the same total, and the same
  split measured on the uniform run (the placebo). The split, the counts, the gains and the ratio
  are the real probe's own functions; only the pass rates differ: here they are the simulated
  model's exact ``sigmoid(z)`` (means over a cluster's prompts), not 16 or 8 samples.

The uniform arm and the probe arm share the task, the prompt order and the reward random numbers
(one allocator configuration for both, so the same uniforms lie behind every reward).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binom

from cobarl import metrics as M
from cobarl.policies import StrategyConfig
from cobarl.experiments.comparison.probe import ProbeAllocator, half_gains, ratio, stratified_half, unit_rates
from cobarl.experiments.simulation.simulator import SimOptions, SimRun

HISTOGRAM_SAMPLES = 16
"""Samples per train prompt behind the real histogram (``cobarl probe``'s TRAIN_SAMPLES)."""


# --- pure functions -------------------------------------------------------------------------------------


def expected_histogram(p: np.ndarray, n: int = HISTOGRAM_SAMPLES) -> dict[str, float]:
    """Expected share of prompts with 0, 1-4 and n successes out of ``n`` samples, for pass rates ``p``.

    >>> {k: round(v, 3) for k, v in expected_histogram(np.array([0.0, 1.0])).items()}
    {'hist_0': 0.5, 'hist_1_4': 0.0, 'hist_16': 0.5}
    """
    p = np.asarray(p, dtype=np.float64)
    return {"hist_0": float(binom.pmf(0, n, p).mean()),
            "hist_1_4": float(sum(binom.pmf(k, n, p) for k in range(1, 5)).mean()),
            "hist_16": float(binom.pmf(n, n, p).mean())}


def curve_shares(curve: np.ndarray, initial: float, epoch_steps: int) -> dict[str, float]:
    """Gain of an accuracy curve (``curve[t]``: after step t + 1) and the shares of it made in the first
    epoch (``epoch_steps`` steps) and in the second half of the run. NaN shares when nothing was gained.

    >>> curve_shares(np.array([0.1, 0.2, 0.3, 0.4]), 0.0, 1)
    {'gain': 0.4, 'epoch1_share': 0.25, 'second_half_share': 0.5}
    """
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 1 or curve.size < 2 or not 1 <= epoch_steps <= curve.size:
        raise ValueError(f"need a curve of >= 2 steps and 1 <= epoch_steps <= its length; got {curve.size}, {epoch_steps}")
    gain = float(curve[-1] - initial)
    if abs(gain) < 1e-12:
        return {"gain": gain, "epoch1_share": float("nan"), "second_half_share": float("nan")}
    return {"gain": gain,
            "epoch1_share": float((curve[epoch_steps - 1] - initial) / gain),
            "second_half_share": float((curve[-1] - curve[curve.size // 2 - 1]) / gain)}


def cluster_means(p: np.ndarray, cluster: np.ndarray) -> dict[int, float]:
    """Mean pass rate of each cluster's prompts (``probe.unit_rates`` with one exact "sample" per prompt)."""
    return unit_rates(np.asarray(p, dtype=np.float64)[:, None], [int(c) for c in cluster])


# --- runs -----------------------------------------------------------------------------------------------


def probe_allocator_config(options: SimOptions) -> StrategyConfig:
    """Uniform GRPO's allocator, with room for the probe's largest count: a favoured prompt can get up to
    ``weight`` x the mean, more than any fixed cap, so the cap is the step's whole budget (for both arms,
    so that both draw the same reward random numbers)."""
    return StrategyConfig("uniform", max_budget=max(1, options.total_budget()), total_steps=options.steps)


def run_sim_probe(options: SimOptions, seed: int, weight: float = 3.0) -> dict[str, Any]:
    """The simulated probe and placebo for one seed, and the uniform run's own measures.

    Returns a dict with ``favoured_clusters``, ``ratios`` (``{"probe"|"placebo": {"train"|"held_out": ratio}}``,
    NaN where the unfavoured half did not improve), ``gains`` (the (favoured, unfavoured) mean gains behind
    them), ``histogram`` (expected, at the start), and ``uniform``: held-out accuracy before and after, its
    :func:`curve_shares`, and its held-out gain over its train gain.
    """
    if not weight > 1 or not np.isfinite(weight):
        raise ValueError(f"the probe's weight must be a finite number > 1, got {weight}")
    config = probe_allocator_config(options)
    uniform = SimRun(config, seed, options)
    task = uniform.task
    train, held = uniform.train, uniform.heldout
    before = {"train": cluster_means(uniform.learner.pass_rates(train), task.cluster[train]),
              "held_out": cluster_means(uniform.learner.pass_rates(held), task.cluster[held])}
    favoured = stratified_half(before["train"], seed)
    favoured_ids = {int(i) for i in train if int(task.cluster[i]) in favoured}
    probe = SimRun(config, seed, options, allocator=ProbeAllocator(config, favoured_ids, weight))
    curve, train_curve = [], []
    for step in range(options.steps):
        row = uniform.step(step)
        curve.append(row[M.EVAL_HELDOUT_ACCURACY])
        train_curve.append(row[M.EVAL_TRAIN_ACCURACY])
        probe.step(step)
    gains: dict[str, dict[str, tuple[float, float]]] = {}
    for arm, run in (("placebo", uniform), ("probe", probe)):
        after = {"train": cluster_means(run.learner.pass_rates(train), task.cluster[train]),
                 "held_out": cluster_means(run.learner.pass_rates(held), task.cluster[held])}
        gains[arm] = {k: half_gains(before[k], after[k], favoured) for k in ("train", "held_out")}
    initial = float(np.mean(_initial_rates(uniform, held)))
    train_initial = float(np.mean(_initial_rates(uniform, train)))
    shares = curve_shares(np.array(curve), initial, max(1, task.n_train // options.prompts_per_step))
    train_gain = train_curve[-1] - train_initial
    return {
        "seed": seed,
        "favoured_clusters": sorted(favoured),
        "histogram": expected_histogram(_initial_rates(uniform, train)),
        "uniform": {"heldout_before": initial, "heldout_after": float(curve[-1]), **shares,
                    "heldout_train_gain_ratio": shares["gain"] / train_gain if train_gain > 1e-9 else float("nan")},
        "gains": gains,
        "ratios": {arm: {k: ratio(g) for k, g in by.items()} for arm, by in gains.items()},
    }


def _initial_rates(run: SimRun, idx: np.ndarray) -> np.ndarray:
    """Pass rates of ``idx`` at step 0 (skills before any step: u = 0)."""
    return run.task.initial_pass_rates(idx)
