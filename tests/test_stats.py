"""Per-prompt statistics: windows, estimators, priors, state round trip, bad input."""

import json

import numpy as np
import pytest

from cobarl import PromptStats, RecentRolloutStats, group_outcomes, success_rule


def test_group_outcomes_by_id_not_position():
    ids, s, a = group_outcomes(["q2", "q1", "q2", "q2", "q1"], np.array([1.0, -1.0, -1.0, 1.0, 1.0]))
    assert ids == ["q2", "q1"]
    np.testing.assert_array_equal(s, [2, 1])  # DAPO-style -1/+1 rewards: success is +1
    np.testing.assert_array_equal(a, [3, 2])


def test_group_outcomes_names_the_nan_group():
    with pytest.raises(ValueError, match=r"rollout 2 \(group 'b'\) is nan"):
        group_outcomes(["a", "a", "b"], np.array([1.0, 0.0, np.nan]))


def test_window_keeps_last_appearances():
    st = PromptStats(stats_window=2)
    st.update([7], np.array([0]), np.array([4]))
    st.update([7], np.array([2]), np.array([4]))
    st.update([7], np.array([4]), np.array([8]))
    # Window 2: (2 + 4) / (4 + 8); the first appearance fell out.
    assert st.pass_rates([7])[0] == pytest.approx(6 / 12)


def test_unseen_prior_global_vs_half():
    st = PromptStats(prior="global")
    assert st.pass_rates([1])[0] == 0.5  # nothing seen yet
    st.update([1, 2], np.array([1, 0]), np.array([4, 4]))
    assert st.pass_rates([3])[0] == pytest.approx(1 / 8)
    half = PromptStats(prior="half")
    half.update([1, 2], np.array([1, 0]), np.array([4, 4]))
    assert half.pass_rates([3])[0] == 0.5
    np.testing.assert_array_equal(st.seen([1, 3]), [True, False])


def test_posterior_mean_shrinks_toward_prior():
    st = PromptStats(estimator="posterior", prior="half", prior_strength=2.0)
    st.update([1], np.array([0]), np.array([2]))
    # (0 + 2 * 0.5) / (2 + 2) = 0.25, not the empirical 0.
    assert st.pass_rates([1])[0] == pytest.approx(0.25)


def test_vectorised_over_ids_of_mixed_types():
    st = PromptStats()
    st.update(np.array([10, 11]), np.array([3, 0]), np.array([4, 2]))
    np.testing.assert_allclose(st.pass_rates([11, 10, 99]), [0.0, 0.75, 3 / 6])


def test_state_round_trip_keeps_id_types():
    st = PromptStats(stats_window=3)
    st.update([1, "a"], np.array([1, 2]), np.array([2, 2]))
    st.update([1], np.array([0]), np.array([4]))
    restored = PromptStats(stats_window=3)
    restored.load_state_dict(json.loads(json.dumps(st.state_dict())))
    assert restored.state_dict() == st.state_dict()
    np.testing.assert_array_equal(restored.pass_rates([1, "a", "1"]), st.pass_rates([1, "a", "1"]))
    assert restored.pass_rates(["1"])[0] == st.global_pass_rate  # "1" is not 1


def test_load_refuses_a_different_window():
    st = PromptStats(stats_window=3)
    with pytest.raises(ValueError, match="stats_window: saved 3, now 1"):
        PromptStats(stats_window=1).load_state_dict(st.state_dict())


def test_load_reads_a_state_saved_before_stats_window_was_named():
    st = PromptStats(stats_window=2)
    st.update([1], np.array([1]), np.array([2]))
    old = st.state_dict()
    old["config"] = {("window" if k == "stats_window" else k): v for k, v in old["config"].items()}
    restored = PromptStats(stats_window=2)
    restored.load_state_dict(old)
    assert restored.state_dict() == st.state_dict()
    with pytest.raises(ValueError, match="stats_window: saved 2, now 3"):
        PromptStats(stats_window=3).load_state_dict(old)


@pytest.mark.parametrize(
    "ids, s, a, message",
    [
        ([1, 1], [0, 1], [2, 2], "unique"),
        ([1], [3], [2], "0 <= successes <= attempts"),
        ([1], [0], [0], "attempts >= 1"),
        ([1, 2], [0], [2, 2], "successes of shape"),
        ([1.5], [0], [2], "use int or str ids"),
    ],
)
def test_bad_update_changes_nothing(ids, s, a, message):
    st = PromptStats()
    st.update([9], np.array([1]), np.array([2]))
    before = st.state_dict()
    with pytest.raises((ValueError, TypeError), match=message):
        st.update(ids, np.array(s), np.array(a))
    assert st.state_dict() == before


def test_bad_config():
    with pytest.raises(ValueError, match="valid: empirical, posterior"):
        PromptStats(estimator="ema")
    with pytest.raises(ValueError, match="valid: global, half"):
        PromptStats(prior="zero")


def test_success_rules():
    r = np.array([1.0, 0.9, 0.5, -1.0])
    assert success_rule(">0.5")(r).tolist() == [True, True, False, False]
    assert success_rule("==1")(r).tolist() == [True, False, False, False]  # overlong-penalised 0.9 fails
    assert success_rule(">=0.5")(r).tolist() == [True, True, True, False]
    assert success_rule(lambda x: x < 0)(r).tolist() == [False, False, False, True]
    assert str(success_rule("== 1.0")) == "==1"
    for bad in ("1", "<0.5", "==nan", ">inf", 0.5):
        with pytest.raises(ValueError, match="is not understood"):
            success_rule(bad)


def test_group_outcomes_uses_the_success_rule():
    _, s, _ = group_outcomes([1, 1, 2], np.array([1.0, 0.9, 0.9]), success="==1")
    np.testing.assert_array_equal(s, [1, 0])


def test_update_refuses_fractional_or_nan_attempts_before_changing_anything():
    st = PromptStats()
    st.update([1], np.array([1]), np.array([2]))
    before = st.state_dict()
    for s, a in ((np.array([0, 1]), np.array([2, np.nan])), (np.array([0, 1]), np.array([2, 2.5]))):
        with pytest.raises(ValueError, match="prompt 3"):
            st.update([2, 3], s, a)
    assert st.state_dict() == before


def test_recent_rollouts_estimate_follows_knapsack_rl():
    st = RecentRolloutStats(rollouts=16, min_rollouts=8)
    st.observe(["a"] * 4, np.array([1, 0, 1, 1.0]))
    assert not st.seen(["a"])[0]  # 4 rollouts < 8: unseen, outside the optimisation
    assert st.pass_rates(["a", "never"]).tolist() == [0.75, 0.0]
    st.observe(["a"] * 12, np.r_[np.zeros(11), 1.0])
    # 12 < 16 rollouts in the last appearance: the 16 most recent across appearances.
    assert st.seen(["a"])[0] and st.pass_rates(["a"])[0] == pytest.approx(4 / 16)
    st.observe(["a"] * 6, np.zeros(6))
    # 6 from this appearance + the last 10 of the previous one (its order matters: 9 zeros, then 1).
    assert st.pass_rates(["a"])[0] == pytest.approx(1 / 16)
    st.observe(["a"] * 20, np.r_[np.ones(5), np.zeros(15)])
    assert st.pass_rates(["a"])[0] == pytest.approx(5 / 20)  # >= 16 in the last appearance: it alone
    # -1 rewards (DAPO) are failures, as the public code maps -1 to 0.
    st.observe(["b"] * 8, np.r_[-np.ones(6), np.ones(2)])
    assert st.pass_rates(["b"])[0] == pytest.approx(2 / 8)


def test_recent_rollouts_state_round_trip_and_refusal():
    st = RecentRolloutStats()
    st.observe([1, 1, 2, 1], np.array([1.0, 0.0, 1.0, 1.0]))
    st.observe([1] * 20, np.ones(20))
    back = RecentRolloutStats()
    back.load_state_dict(json.loads(json.dumps(st.state_dict())))
    assert back.state_dict() == st.state_dict()
    np.testing.assert_array_equal(back.pass_rates([1, 2]), st.pass_rates([1, 2]))
    with pytest.raises(ValueError, match="rollouts=8"):
        RecentRolloutStats(rollouts=8).load_state_dict(st.state_dict())
