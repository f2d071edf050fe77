"""The reward stage of `cobarl train`: the verifier ``f(completion, answer) -> float`` as TRL's batch
reward, and a probe that refuses a broken verifier before any model loads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cobarl.rewards import GuardedReward


def completion_text(completion: Any) -> str:
    """TRL passes a string, or a chat list whose last message is the assistant's."""
    return completion if isinstance(completion, str) else str(completion[-1]["content"])


class BatchReward:
    """TRL's reward signature ``f(prompts, completions, answer, **kw) -> list[float]`` over a guarded
    ``verifier(completion, answer)``, scored by ``workers`` threads so one slow call does not serialise
    the batch. ``failure_count`` (calls that raised, timed out or returned NaN) is read by the trainer.
    """

    def __init__(self, verifier: Callable[[str, str], float], name: str = "correct", workers: int = 1):
        self.verifier = verifier if isinstance(verifier, GuardedReward) else GuardedReward(verifier, timeout=None)
        self.workers = workers
        self.__name__ = name

    @property
    def failure_count(self) -> int:
        return self.verifier.failure_count

    @property
    def last_failure(self) -> str:
        return self.verifier.last_failure

    def __call__(self, prompts, completions, answer, **_: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        if len(texts) != len(answer):
            raise ValueError(f"{len(texts)} completions but {len(answer)} answers")
        if self.workers == 1 or len(texts) < 2:
            return [self.verifier(t, a) for t, a in zip(texts, answer)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(self.workers, len(texts)), thread_name_prefix="cobarl-score") as pool:
            return list(pool.map(self.verifier, texts, answer))


def make_reward_func(verifier: Callable[[str, str], float], name: str = "correct", workers: int = 1) -> BatchReward:
    """Adapt ``verifier(completion, answer)`` to TRL's ``f(prompts, completions, answer, ...) -> list``."""
    return BatchReward(verifier, name, workers)


def probe_verifier(verifier, answers: list, *, tries: int = 3, before: str = "training") -> None:
    """Call the verifier on up to ``tries`` ground-truth answers (as their own completions) before any
    model loads: one that fails on all of them, or hangs past its timeout once, is refused now rather
    than after the before-RL evaluation has scored every held-out prompt as a failure."""
    if not isinstance(verifier, GuardedReward):
        return
    probe = GuardedReward(verifier.fn, name=verifier.name, timeout=verifier.timeout, bounded=verifier.timeout is None)
    for answer in list(answers)[:tries]:
        failures = probe.failure_count
        probe(str(answer), answer)
        if probe.failure_count == failures:
            return
        if "timeout" in probe.last_failure:
            break
    raise ValueError(f"reward {verifier.name!r} failed when probed with a ground-truth answer as the completion "
                     f"({probe.last_failure}); fix the verifier (or raise --reward-timeout) before {before}")


def exceeds_failure_limit(failed: int, calls: int, limit: float) -> bool:
    """Whether ``failed`` of ``calls`` reward calls reach ``limit`` (a share; 1 disables the check)."""
    return limit < 1 and calls > 0 and failed / calls >= limit
