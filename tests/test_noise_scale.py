"""scripts/noise_scale.py: the unbiased |G|^2 and tr(Sigma) estimates (McCandlish et al. 2018, A.1)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

_spec = importlib.util.spec_from_file_location("noise_scale", Path(__file__).resolve().parents[1] / "scripts" / "noise_scale.py")
noise_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(noise_scale)


def test_identical_gradients_have_no_noise():
    g = torch.tensor([[1.0, 2.0, 2.0]] * 4, dtype=torch.float64)
    signal, trace = noise_scale.noise_scale_terms(g)
    assert signal == pytest.approx(9.0) and trace == pytest.approx(0.0, abs=1e-12)


def test_estimates_are_unbiased_over_many_batches():
    rng = np.random.default_rng(0)
    mean, sigma, b = np.array([0.3, -0.4]), 2.0, 8  # |G|^2 = 0.25, tr S = 2 * 4 = 8
    terms = [noise_scale.noise_scale_terms(torch.tensor(mean + sigma * rng.standard_normal((b, 2)))) for _ in range(20000)]
    signal, trace = np.mean(terms, axis=0)
    assert signal == pytest.approx(0.25, abs=0.03) and trace == pytest.approx(8.0, rel=0.02)
