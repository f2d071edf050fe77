"""The sampling of ``cobarl diagnose``: k rollouts for every prompt, then more for some 0/k and k/k
prompts until each is decided or reaches its sampling budget.

Generation goes through the project's back-ends (`cobarl.models.generate.HFGenerator`, or
`cobarl.evaluate.avgk.VLLMGenerator`), many prompts x many samples per call; scoring through
`cobarl.train.rewards.BatchReward` (the guarded verifier, ``reward_workers`` threads), as in training.
Each call gets its own seed derived from the run's seed and the call's place in the run, so the
same seed gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cobarl.train.rewards import exceeds_failure_limit

CHECK_AFTER = 16
"""Reward calls after which sampling stops early when the verifier fails at the failure limit."""


def call_seed(seed: int, *path: int) -> int:
    """A 32-bit seed for one generation call (or one draw) of the run ``seed``: distinct calls get
    independent streams, and the same run always the same ones."""
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


@dataclass
class Sampler:
    """Samples and scores completions: ``successes(texts, answers, n, seed) -> [P, n]`` booleans.

    Attributes:
        generator: an `HFGenerator` or `VLLMGenerator` (anything with their ``generate``).
        reward: a `BatchReward` (``reward(prompts, completions, answer) -> list``, ``failure_count``).
        success: the success rule, rewards -> booleans (`cobarl.stats.success_rule`).
        temperature, max_tokens: sampling.
        failure_limit: stop (RuntimeError) once this share of the reward calls failed.
        on_done: called with the number of completions each generation call finished (a progress bar).
        generated: completions generated so far; reward_calls: completions scored so far.
    """

    generator: object
    reward: Callable
    success: Callable[[np.ndarray], np.ndarray]
    temperature: float
    max_tokens: int
    failure_limit: float = 0.9
    on_done: Callable[[int], None] | None = None
    generated: int = 0
    reward_calls: int = 0
    _failures_before: int = field(default=-1, repr=False)

    @property
    def reward_failures(self) -> int:
        return 0 if self._failures_before < 0 else self.reward.failure_count - self._failures_before

    def successes(self, texts: Sequence[str], answers: Sequence[str], n: int, seed: int) -> np.ndarray:
        if self._failures_before < 0:
            self._failures_before = self.reward.failure_count
        samples = self.generator.generate(list(texts), n=n, temperature=self.temperature, top_p=1.0,
                                          max_tokens=self.max_tokens, seed=seed, on_done=self.on_done)
        if len(samples) != len(texts) or any(len(s) != n for s in samples):
            raise RuntimeError(f"the generator returned {[len(s) for s in samples][:8]}... completions for {len(texts)} "
                               f"prompts x {n}; expected {n} per prompt")
        flat = [c for group in samples for c in group]
        scores = np.asarray(self.reward(None, flat, [str(a) for a in answers for _ in range(n)]), dtype=np.float64)
        self.generated += len(flat)
        self.reward_calls += len(flat)
        failed = self.reward_failures
        if self.reward_calls >= CHECK_AFTER and exceeds_failure_limit(failed, self.reward_calls, self.failure_limit):
            detail = getattr(self.reward, "last_failure", "")
            raise RuntimeError(f"sampling stopped: the reward failed on {failed} of {self.reward_calls} calls "
                               f"(>= {self.failure_limit:g}), so the pass rates would be meaningless"
                               + (f"; last failure: {detail}" if detail else "")
                               + ". Fix the verifier (or raise --reward-timeout) and run again.")
        return np.asarray(self.success(scores), dtype=bool).reshape(len(texts), n)


@dataclass
class Resampled:
    """Per resampled prompt (index into the first pass's prompts): samples drawn in all (the first k
    included), successes among them, and at which sample the prompt was decided (its first success
    for a 0/k prompt, first failure for a k/k prompt; None: undecided within the budget)."""

    index: np.ndarray  # [R] prompt index
    looking_for_success: np.ndarray  # [R] True for 0/k prompts, False for k/k prompts
    samples: np.ndarray  # [R] samples drawn, first pass included
    successes: np.ndarray  # [R] successes among them
    decided_at: list  # [R] 1-based sample number that decided it, or None


def first_pass(sampler: Sampler, texts: Sequence[str], answers: Sequence[str], k: int, seed: int) -> np.ndarray:
    """``[P]`` successes among ``k`` samples of each prompt (one generation pass over every prompt)."""
    return sampler.successes(texts, answers, k, call_seed(seed, 1)).sum(axis=1)


def resample(sampler: Sampler, texts: Sequence[str], answers: Sequence[str], index: Sequence[int],
              looking_for_success: Sequence[bool], *, k: int, max_samples: int, round_size: int,
              seed: int) -> Resampled:
    """Sample the prompts ``index`` (each already sampled ``k`` times, all failed or all succeeded) in
    rounds of up to ``round_size`` samples per still-undecided prompt, every such prompt in one call per
    round, until each is decided or has ``max_samples`` samples in all.

    A round's samples are all generated and counted; a prompt decided within a round stops after it.
    """
    index = np.asarray(index, dtype=np.int64)
    target = np.asarray(looking_for_success, dtype=bool)
    drawn = np.full(index.size, k, dtype=np.int64)
    wins = np.where(target, 0, k).astype(np.int64)
    decided_at: list = [None] * index.size
    active, total, rnd = np.arange(index.size), k, 0
    while active.size and total < max_samples:
        rnd, n = rnd + 1, min(round_size, max_samples - total)
        ok = sampler.successes([texts[i] for i in index[active]], [answers[i] for i in index[active]], n,
                               call_seed(seed, 2, rnd))
        hit = ok == target[active, None]  # [A, n]: a success where one is looked for, else a failure
        for row, j in enumerate(active):
            if hit[row].any():
                decided_at[j] = int(total + np.argmax(hit[row]) + 1)
        drawn[active] += n
        wins[active] += ok.sum(axis=1)
        total += n
        active = np.array([j for j in active if decided_at[j] is None], dtype=np.int64)
    return Resampled(index=index, looking_for_success=target, samples=drawn, successes=wins, decided_at=decided_at)


def pick(candidates: Sequence[int], count: int, seed: int, tag: int) -> np.ndarray:
    """``count`` of ``candidates`` (all when fewer), drawn at random with the run's seed, in their order."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if count >= candidates.size:
        return candidates
    rng = np.random.default_rng(call_seed(seed, 3, tag))
    return np.sort(rng.choice(candidates, size=count, replace=False))
