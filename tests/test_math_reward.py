"""math-verify reward (answer equivalences, timeout, threads), the reward registry and its guard."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cobarl.rewards import REWARDS, GuardedReward, exact_match_reward, load_reward, register_reward, resolve_reward

pytest.importorskip("math_verify")

from cobarl.rewards.math import MathVerifier, math_reward  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
CASES = [json.loads(line) for line in (DATA / "math_equivalences.jsonl").read_text().splitlines()]
# 9^(9^(9^9)) vs 10^(10^(10^10)): sympy tries to compare two astronomically large integers and never returns.
HANG = (r"\boxed{9^{9^{9^{9}}}}", r"10^{10^{10^{10}}}")


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(timeout=5.0) as v:
        v.warm_up()
        yield v


@pytest.mark.parametrize("case", CASES, ids=[c["note"] for c in CASES])
def test_answer_equivalences(verifier, case):
    assert verifier(case["completion"], case["answer"]) == float(case["expected"]), case


def test_equivalence_table_covers_the_tricky_kinds():
    notes = " ".join(c["note"] for c in CASES)
    for kind in ("fraction", "decimal", "unit", "interval", "multiple answers", "'Answer:'", "box"):
        assert kind in notes, kind
    assert sum(c["expected"] == 0 for c in CASES) >= 8  # and enough negatives


def test_math_reward_public_function_and_threads():
    assert math_reward(r"so \boxed{\frac{1}{2}}", "0.5") == 1.0
    assert math_reward("Answer: 7", "8") == 0.0
    # off the main thread (where math-verify's signal timeouts cannot work), many callers at once
    pairs = [(rf"\boxed{{{i}/2}}", f"{i / 2}") for i in range(8)] + [(r"\boxed{3}", "4")]
    with ThreadPoolExecutor(4) as pool:
        scores = list(pool.map(lambda cp: math_reward(*cp), pairs))
    assert scores == [1.0] * 8 + [0.0]


def test_parallel_score_and_rewards_in_01(verifier):
    with MathVerifier(workers=2, timeout=5.0) as two:
        scores = two.score([c["completion"] for c in CASES], [c["answer"] for c in CASES])
    assert scores == [float(c["expected"]) for c in CASES]
    assert set(scores) <= {0.0, 1.0}


def test_timeout_scores_zero_is_counted_and_recovers():
    with MathVerifier(timeout=1.0) as v:
        v.warm_up()
        started = time.monotonic()
        assert v(*HANG) == 0.0
        assert time.monotonic() - started < 3.0  # bounded: the worker is killed, not waited for
        assert v.warnings.counts["timeout"] == 1
        # a fresh worker takes over; off the main thread too
        out = []
        t = threading.Thread(target=lambda: out.append(v(r"\boxed{0.25}", r"\frac14")))
        t.start()
        t.join(30)
        assert out == [1.0]
        assert v.warnings.total == 1


def test_thread_backend_for_normal_answers():
    v = MathVerifier(backend="thread", timeout=10.0)
    assert v(r"\boxed{[2,5)}", "[2, 5)") == 1.0
    assert v(r"\boxed{(2,5)}", "[2, 5)") == 0.0
    with pytest.raises(ValueError, match="backend"):
        MathVerifier(backend="ray")


# --- registry and guard ----------------------------------------------------------------------------


def _raises(completion: str, answer: str) -> float:
    raise RuntimeError("boom")


def _sleeps(completion: str, answer: str) -> float:
    time.sleep(5)
    return 1.0


def test_registry_names_imports_and_callables():
    assert {"exact", "math"} <= set(REWARDS.names())
    assert resolve_reward("exact")("12<eos>", "12") == 1.0
    assert resolve_reward("math")(r"\boxed{12}", "12") == 1.0
    assert resolve_reward("cobarl.rewards.exact:exact_match_reward") is exact_match_reward
    assert resolve_reward(_raises) is _raises
    with pytest.raises(ValueError, match=r"unknown reward 'nope'; valid rewards: exact, math"):
        resolve_reward("nope")
    with pytest.raises(ValueError, match="cannot import"):
        resolve_reward("cobarl.rewards.exact:missing")
    with pytest.raises(ValueError, match="already registered"):
        register_reward("exact", exact_match_reward)


def test_register_reward_decorator():
    name = "test-length-parity"
    if name not in REWARDS:

        @register_reward(name)
        def parity(completion: str, answer: str) -> float:
            return float(len(completion) % 2 == len(answer) % 2)

    assert load_reward(name)("ab", "cd") == 1.0


def test_guard_turns_errors_hangs_and_nans_into_counted_zeros(caplog):
    bad = GuardedReward(_raises, name="bad", timeout=None)
    with caplog.at_level("WARNING", logger="cobarl.rewards"):
        assert [bad("x", "y") for _ in range(4)] == [0.0] * 4
    assert bad.warnings.counts["error"] == 4
    assert "reward bad: error" in caplog.text and "RuntimeError: boom" in caplog.text

    slow = GuardedReward(_sleeps, name="slow", timeout=0.2)
    started = time.monotonic()
    assert slow("x", "y") == 0.0
    assert time.monotonic() - started < 2.0 and slow.warnings.counts["timeout"] == 1

    nan = GuardedReward(lambda c, a: math.nan, name="nan", timeout=None)
    assert nan("x", "y") == 0.0 and nan.warnings.counts["invalid"] == 1

    fine = load_reward(lambda c, a: 0.5)
    assert fine("x", "y") == 0.5 and fine.warnings.total == 0


def test_builtin_rewards_skip_the_watchdog():
    exact = load_reward("exact")
    assert exact.timeout is None  # bounded by construction: called directly, no thread per call
    assert exact("19<eos>", "19") == 1.0
    assert load_reward("math").timeout is None
    assert load_reward(_raises).timeout == 30.0  # user functions get the watchdog
