"""Group advantages over variable-size groups, against a reference loop."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cobarl import group_advantages


def reference(rewards, ids, scale="group", eps=1e-6):
    out = np.zeros(len(rewards))
    for g in dict.fromkeys(ids):
        idx = [i for i, x in enumerate(ids) if x == g]
        r = rewards[idx]
        if len(idx) < 2 or np.all(r == r[0]):
            continue
        centred = r - r.mean()
        out[idx] = centred / (r.std(ddof=1) + eps) if scale == "group" else centred
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.sampled_from([0.0, 1.0, 0.5, -1.0])), min_size=1, max_size=60),
    st.sampled_from(["group", "none"]),
)
def test_matches_reference_loop(pairs, scale):
    ids = [g for g, _ in pairs]
    rewards = np.array([r for _, r in pairs])
    res = group_advantages(rewards, ids, scale=scale)
    np.testing.assert_allclose(res.advantages, reference(rewards, ids, scale), rtol=1e-12, atol=1e-12)


def test_variable_group_sizes_and_metrics():
    # Prompt a: 40 rollouts, 10 correct; prompt b: 2 rollouts, 1 correct; c: all wrong; d: a single rollout.
    ids = ["a"] * 40 + ["b"] * 2 + ["c"] * 5 + ["d"]
    rewards = np.array([1.0] * 10 + [0.0] * 30 + [1.0, 0.0] + [0.0] * 5 + [1.0])
    res = group_advantages(rewards, ids)
    # a: mean 0.25, unbiased std sqrt(40 * 0.1875 / 39) = 0.4385
    assert res.advantages[0] == pytest.approx(0.75 / 0.43853, rel=1e-4)
    assert res.advantages[40] == pytest.approx(0.5 / np.sqrt(0.5), rel=1e-5)
    assert np.all(res.advantages[42:] == 0)
    assert res.num_groups == 4 and res.num_degenerate_groups == 2
    assert res.effective_ratio == pytest.approx(42 / 48)
    np.testing.assert_array_equal(res.group_size, [40, 2, 5, 1])


def test_interleaved_ids_are_grouped_by_id_not_position():
    a = group_advantages(np.array([1.0, 0.0, 0.0, 1.0]), [1, 2, 1, 2])
    b = group_advantages(np.array([1.0, 0.0, 0.0, 1.0]), [1, 1, 2, 2])
    np.testing.assert_allclose(a.advantages[[0, 2]], b.advantages[[0, 1]])


def test_uniform_groups_match_plain_grpo_reshape():
    rng = np.random.default_rng(0)
    rewards = rng.integers(0, 2, size=(8, 4)).astype(float)
    grpo = (rewards - rewards.mean(1, keepdims=True)) / (rewards.std(1, ddof=1, keepdims=True) + 1e-6)
    res = group_advantages(rewards.ravel(), np.repeat(np.arange(8), 4))
    np.testing.assert_allclose(res.advantages, grpo.ravel(), atol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match=r"rollout 1 \(group 'x'\) is inf"):
        group_advantages(np.array([0.0, np.inf]), ["x", "x"])
    with pytest.raises(ValueError, match="2 group ids"):
        group_advantages(np.array([0.0]), ["x", "y"])
    with pytest.raises(ValueError, match="valid: group, none"):
        group_advantages(np.array([0.0]), ["x"], scale="batch")


def test_baseline_advantages_centre_on_the_given_baseline_and_optionally_scale():
    from cobarl.advantages import baseline_advantages

    r = np.array([1.0, 0.0, 1.0, 1.0, 0.5])
    ids = ["a", "a", "b", "b", 7]
    base = {"a": (0.25, 0.5), "b": (0.75, 0.4330127), 7: (0.5, 0.0)}
    adv = baseline_advantages(r, ids, base)
    np.testing.assert_allclose(adv, [0.75, -0.25, 0.25, 0.25, 0.0])
    # all-equal kept rows still carry the pool's signal (unlike group_advantages, which gives them 0)
    assert group_advantages(r[2:4], ids[2:4]).advantages.tolist() == [0.0, 0.0]
    np.testing.assert_allclose(baseline_advantages(r, ids, base, scale_by_std=True),
                               [0.75 / (0.5 + 1e-6), -0.25 / (0.5 + 1e-6), 0.25 / (0.4330127 + 1e-6),
                                0.25 / (0.4330127 + 1e-6), 0.0])
    # numpy ids, empty input, and the pool baseline equal to the group's own mean give GRPO's centring
    np.testing.assert_allclose(baseline_advantages(r[:2], np.array([3, 3]), {3: (0.5, 1.0)}), [0.5, -0.5])
    assert baseline_advantages(np.zeros(0), [], {}).shape == (0,)
    with pytest.raises(KeyError, match="no baseline for group 'c'"):
        baseline_advantages(np.array([1.0]), ["c"], base)
    # an unscorable rollout (NaN reward) carries no signal; an infinite reward is refused
    assert baseline_advantages(np.array([np.nan, 1.0]), ["a", "a"], base).tolist() == [0.0, 0.75]
    with pytest.raises(ValueError, match="must be finite"):
        baseline_advantages(np.array([np.inf]), ["a"], base)
    with pytest.raises(ValueError, match="shape"):
        baseline_advantages(np.array([1.0, 0.0]), ["a"], base)
    with pytest.raises(ValueError, match="std >= 0"):
        baseline_advantages(np.array([1.0]), ["a"], {"a": (0.5, -1.0)})
