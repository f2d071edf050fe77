"""Global capability: failure rate -> Beta preference parameters (alpha_t, beta_t).

Stage 2 of the data flow. CoBA-RL (arXiv 2602.03048, Eqs. 4-7) measures the model's global failure
rate F_t each step, smooths it over the last ``window`` steps, sharpens it with Psi and maps it to a
Beta density whose mode moves from easy prompts (high alpha) to hard prompts (low alpha) as the
model improves. Constants follow the public code: alpha_min = 1, lambda = kappa - 2,
alpha_max = kappa - 1, so alpha + beta = kappa.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

SCHEDULES = ("exploit-to-explore", "explore-to-exploit", "fixed", "linear-decay")


def psi(failure_rate: float, gamma: float = 10.0) -> float:
    """Eq. 6: identity above 0.5, ``sigmoid(gamma * (F - 0.5))`` below (continuous at 0.5).

    >>> round(psi(0.4), 3), psi(0.7)
    (0.269, 0.7)
    """
    if failure_rate > 0.5:
        return float(failure_rate)
    return float(1.0 / (1.0 + np.exp(-gamma * (failure_rate - 0.5))))


def beta_params(f_tilde: float, kappa: float = 11.0) -> tuple[float, float]:
    """Eq. 7: ``alpha = clip(1 + (kappa - 2) * F~, 1, kappa - 1)``, ``beta = kappa - alpha``.

    >>> beta_params(0.696)  # Fig. 4, first point: (7.264, 3.736)
    (7.264, 3.736)
    """
    alpha = float(np.clip(1.0 + (kappa - 2.0) * f_tilde, 1.0, kappa - 1.0))
    return round(alpha, 12), round(kappa - alpha, 12)


def linear_decay_alpha(step: int, total_steps: int, kappa: float = 11.0) -> float:
    """Table 3's "linear step decay": alpha stepped kappa-1, kappa-2, ..., 1 in equal stages over training."""
    levels = int(round(kappa - 1.0))  # 10 stages for kappa = 11
    stage = min(levels - 1, (step * levels) // max(total_steps, 1))
    return float(kappa - 1.0 - stage)


@dataclass
class CapabilityTracker:
    """Moving failure rate and the Beta preference parameters it induces.

    Args:
        kappa: alpha + beta, the concentration of the preference density (paper default 11).
        window: k, the number of past steps averaged into F-bar (public 7B script: 1).
        gamma: sharpness of Psi below F = 0.5 (paper: 10).
        schedule: ``"exploit-to-explore"`` (paper default: alpha follows the failure rate, so
            the budget moves from easy to hard prompts as the model improves);
            ``"explore-to-exploit"`` (alpha follows the success rate instead, Table 2);
            ``"fixed"`` (alpha, beta = fixed_alpha, fixed_beta; Table 3);
            ``"linear-decay"`` (alpha stepped from kappa-1 down to 1 over ``total_steps``; Table 3).
        fixed_alpha, fixed_beta: the pair for ``schedule="fixed"``.
        total_steps: training length for ``schedule="linear-decay"``.
    """

    kappa: float = 11.0
    window: int = 1
    gamma: float = 10.0
    schedule: str = "exploit-to-explore"
    fixed_alpha: float | None = None
    fixed_beta: float | None = None
    total_steps: int | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if not self.kappa > 2:
            raise ValueError(f"kappa must be > 2 so that alpha, beta >= 1 can sum to it; got {self.kappa}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")
        if self.schedule == "fixed" and not (
            self.fixed_alpha is not None and self.fixed_beta is not None and self.fixed_alpha > 0 and self.fixed_beta > 0
        ):
            raise ValueError("schedule='fixed' needs fixed_alpha > 0 and fixed_beta > 0, e.g. 10.5 and 1.5")
        if self.schedule == "linear-decay" and not (self.total_steps and self.total_steps > 0):
            raise ValueError("schedule='linear-decay' needs total_steps > 0 (the planned number of training steps)")
        self._failures: deque[float] = deque(maxlen=self.window)
        self.step = 0

    @property
    def failure_rate(self) -> float:
        """F-bar: mean failure rate over the last ``window`` steps (1.0 before any step)."""
        return float(np.mean(self._failures)) if self._failures else 1.0

    @property
    def f_tilde(self) -> float:
        return psi(self.failure_rate, self.gamma)

    @property
    def alpha(self) -> float:
        return self.params()[0]

    @property
    def beta(self) -> float:
        return self.params()[1]

    def params(self) -> tuple[float, float]:
        """Current (alpha, beta), to be used by the next allocation."""
        if self.schedule == "fixed":
            return float(self.fixed_alpha), float(self.fixed_beta)
        if self.schedule == "linear-decay":
            alpha = linear_decay_alpha(self.step, self.total_steps, self.kappa)
            return alpha, self.kappa - alpha
        if not self._failures:
            # The public code starts at alpha = kappa - 2, beta = 2 before the first update.
            return self.kappa - 2.0, 2.0
        signal = self.failure_rate if self.schedule == "exploit-to-explore" else 1.0 - self.failure_rate
        return beta_params(psi(signal, self.gamma), self.kappa)

    def update(self, step_pass_rates: np.ndarray) -> None:
        """Record one training step from the per-prompt success rates of that step.

        S_t is the unweighted mean over prompts (as the public code), so prompts given more
        rollouts do not count more; F_t = 1 - S_t.
        """
        rates = np.asarray(step_pass_rates, dtype=np.float64)
        if rates.ndim != 1 or rates.size == 0:
            raise ValueError(f"step_pass_rates must be a non-empty 1-D array, got shape {rates.shape}")
        if not np.all((rates >= 0) & (rates <= 1)):
            i = int(np.flatnonzero(~((rates >= 0) & (rates <= 1)))[0])
            raise ValueError(f"step pass rate at index {i} is {rates[i]}; pass rates must lie in [0, 1]")
        self._failures.append(1.0 - float(rates.mean()))
        self.step += 1

    def state_dict(self) -> dict:
        return {"failures": list(self._failures), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self._failures = deque((float(x) for x in state["failures"]), maxlen=self.window)
        self.step = int(state["step"])
