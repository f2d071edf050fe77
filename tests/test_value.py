"""Value functions: formulas, gains, concavity, registry."""

import numpy as np
import pytest
from scipy.stats import beta as beta_dist

import cobarl
from cobarl.value import VALUES, as_value


def test_coba_value_matches_eq9():
    v = cobarl.CobaValue(alpha=4.5, beta=6.5, tau=5.0)
    b, p = np.array([2, 7, 128]), np.array([0.3, 0.6, 0.01])
    expected = (1 - np.exp(-b * p * (1 - p) / 5.0)) * beta_dist(4.5, 6.5).pdf(p)
    np.testing.assert_allclose(v(b, p), expected, rtol=1e-12)


def test_gains_are_differences_and_geometric():
    v = cobarl.CobaValue(alpha=7.26, beta=3.74, tau=8.0)
    b = np.arange(2, 40)
    p = np.full(b.size, 0.65)
    np.testing.assert_allclose(v.gain(b, p), v(b + 1, p) - v(b, p), rtol=1e-9)
    ratio = v.gain(b[1:], p[1:]) / v.gain(b[:-1], p[:-1])
    np.testing.assert_allclose(ratio, np.exp(-0.65 * 0.35 / 8.0))  # e^-k, Prop. 2.2


def test_pass_rates_are_clipped_like_the_public_code():
    v = cobarl.CobaValue(alpha=2, beta=9, tau=8.0)
    assert v.gain(np.array([2]), np.array([0.0]))[0] == v.gain(np.array([2]), np.array([0.01]))[0] > 0


def test_adaptive_tau_follows_pass_rate_variance():
    v = cobarl.CobaValue(tau="adaptive")
    assert v.resolve_tau(np.full(8, 0.4)) == 3.0  # no spread: tau_min
    assert v.resolve_tau(np.array([0.01, 0.99] * 4)) == 12.0  # variance 0.24 > 0.1667: tau_max


def test_knapsack_value_and_gain():
    v = cobarl.KnapsackValue()
    # N = 2, p = 0.5: P(mixed) = 1 - 0.25 - 0.25 = 0.5; info gain = 0.5 * 0.25 = 0.125.
    assert v(np.array([2]), np.array([0.5]))[0] == pytest.approx(0.0625)
    b, p = np.arange(2, 30), np.full(28, 0.2)
    np.testing.assert_allclose(v.gain(b, p), v(b + 1, p) - v(b, p), rtol=1e-9, atol=1e-15)
    assert np.all(np.diff(v.gain(b, p)) <= 0)  # concave
    assert v(np.array([64]), np.array([1.0]))[0] == 0


def test_registry_and_adapters():
    assert VALUES.names() == ["coba", "gvm", "knapsack"]
    assert isinstance(as_value("knapsack"), cobarl.KnapsackValue)
    assert isinstance(as_value(None, alpha=3, beta=8), cobarl.CobaValue)
    wrapped = as_value(lambda b, p: b * p)
    assert not wrapped.concave
    np.testing.assert_array_equal(wrapped(np.array([2, 3]), np.array([0.5, 1.0])), [1.0, 3.0])
    with pytest.raises(ValueError, match="already registered"):
        VALUES.register("coba")(object)
    with pytest.raises(TypeError, match="a name"):
        as_value(3.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(alpha=0), "alpha and beta must be > 0"), (dict(tau=-1), "tau must be"), (dict(eps=0.6), "eps")],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cobarl.CobaValue(**kwargs)
