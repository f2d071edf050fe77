"""Capability tracker: Psi, the (alpha, beta) map, schedules, state."""

import json

import numpy as np
import pytest

from cobarl import CapabilityTracker, beta_params, psi


@pytest.mark.parametrize(
    "f_bar, alpha",
    [
        # Fig. 4 points (kappa = 11, gamma = 10, k = 1):
        (0.696, 7.264),  # F > 0.5: F~ = F, alpha = 1 + 9 * 0.696
        (0.455, 4.505),  # F~ = sigmoid(10 * -0.045) = 0.3894, alpha = 1 + 9 * 0.3894
        (0.342, 2.537),  # F~ = sigmoid(10 * -0.158) = 0.1708, alpha = 1 + 9 * 0.1708
    ],
)
def test_paper_fig4_points(f_bar, alpha):
    t = CapabilityTracker(kappa=11, window=1, gamma=10)
    t.update(np.array([1.0 - f_bar]))
    assert t.failure_rate == pytest.approx(f_bar)
    assert t.alpha == pytest.approx(alpha, abs=5e-3)
    assert t.alpha + t.beta == pytest.approx(11.0)


def test_psi_is_continuous_at_half_and_sharpens_below():
    assert psi(0.5) == pytest.approx(0.5)
    assert psi(0.5 + 1e-9) == pytest.approx(psi(0.5 - 1e-9), abs=1e-8)
    assert psi(0.4) == pytest.approx(0.2689, abs=1e-4)  # sigmoid(-1)
    assert psi(0.3) == pytest.approx(0.1192, abs=1e-4)  # sigmoid(-2)
    assert psi(0.8) == 0.8


def test_alpha_is_clipped_to_kappa_range():
    assert beta_params(1.0) == (10.0, 1.0)
    assert beta_params(0.0) == (1.0, 10.0)
    assert beta_params(0.5, kappa=7) == (3.5, 3.5)


def test_initial_state_and_unweighted_mean():
    t = CapabilityTracker()
    assert (t.alpha, t.beta) == (9.0, 2.0)  # public code: kappa - 2, 2 before any update
    # Two prompts at 1.0 and 0.0: S = 0.5 whatever their rollout counts.
    t.update(np.array([1.0, 0.0]))
    assert t.failure_rate == 0.5


def test_moving_average_window():
    t = CapabilityTracker(window=3)
    for s in (0.1, 0.2, 0.3, 0.4):
        t.update(np.array([s]))
    assert t.failure_rate == pytest.approx(1 - np.mean([0.2, 0.3, 0.4]))


def test_explore_to_exploit_mirrors_the_signal():
    a, b = CapabilityTracker(), CapabilityTracker(schedule="explore-to-exploit")
    for t in (a, b):
        t.update(np.array([0.2]))  # failure 0.8
    assert a.alpha == pytest.approx(1 + 9 * 0.8)
    assert b.alpha == pytest.approx(1 + 9 * psi(0.2))


def test_fixed_and_linear_decay():
    t = CapabilityTracker(schedule="fixed", fixed_alpha=10.5, fixed_beta=1.5)
    t.update(np.array([0.3]))
    assert (t.alpha, t.beta) == (10.5, 1.5)
    d = CapabilityTracker(schedule="linear-decay", total_steps=100)
    alphas = []
    for _ in range(100):
        alphas.append(d.alpha)
        d.update(np.array([0.5]))
    assert alphas[0] == 10 and alphas[-1] == 1
    assert sorted(set(alphas), reverse=True) == list(range(10, 0, -1))  # stepped 10 -> 9 -> ... -> 1
    assert all(x >= y for x, y in zip(alphas, alphas[1:]))


def test_state_round_trip_through_json():
    t = CapabilityTracker(window=3)
    for s in (0.1, 0.7, 0.4):
        t.update(np.array([s, s / 2]))
    u = CapabilityTracker(window=3)
    u.load_state_dict(json.loads(json.dumps(t.state_dict())))
    assert (u.alpha, u.beta, u.failure_rate, u.step) == (t.alpha, t.beta, t.failure_rate, t.step)
    t.update(np.array([0.9]))
    u.update(np.array([0.9]))
    assert u.alpha == t.alpha


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(schedule="cosine"), "unknown schedule 'cosine'; valid: exploit-to-explore"),
        (dict(kappa=2), "kappa must be > 2"),
        (dict(window=0), "window must be an integer >= 1"),
        (dict(schedule="fixed"), "fixed_alpha > 0 and fixed_beta > 0"),
        (dict(schedule="linear-decay"), "needs total_steps"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CapabilityTracker(**kwargs)


def test_bad_update_changes_nothing():
    t = CapabilityTracker()
    t.update(np.array([0.4]))
    before = t.state_dict()
    with pytest.raises(ValueError, match=r"index 1 is nan"):
        t.update(np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match="non-empty"):
        t.update(np.array([]))
    assert t.state_dict() == before
