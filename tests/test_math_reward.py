"""math-verify reward (answer equivalences, timeout, threads), the reward registry and its guard."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
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
    with MathVerifier(timeout=1.0, workers=1) as v:
        v.warm_up()
        started = time.monotonic()
        assert v(*HANG) == 0.0
        # The hang never ends on its own: any return means the worker was killed, not waited for
        # (the bound is loose so that a loaded machine cannot fail it).
        assert time.monotonic() - started < 15.0
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


def test_non_string_input_scores_zero_with_a_counted_warning():
    with MathVerifier(timeout=5.0) as v:  # no worker is started: the input is refused up front
        assert v(None, "1") == 0.0
        assert v(r"\boxed{1}", None) == 0.0
        assert v(b"\\boxed{1}", "1") == 0.0
        assert v.warnings.counts["invalid"] == 3
        assert v(r"\boxed{1}", 1) == 1.0  # a number is a fine answer (parquet columns hold ints)
        assert v.warnings.total == 3
    assert math_reward(None, "1") == 0.0


def test_concurrent_hanging_checks_run_side_by_side():
    """4 hung checks at once: each is killed after its own timeout instead of queueing behind the others."""
    timeout = 3.0
    with MathVerifier(timeout=timeout) as v:  # the default pool, as behind math_reward
        v.warm_up()
        elapsed: list[float] = []

        def hang() -> None:
            started = time.monotonic()
            assert v(*HANG) == 0.0
            elapsed.append(time.monotonic() - started)

        threads = [threading.Thread(target=hang) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(elapsed) == 4
        # Every check ran (no caller gave up on a busy pool) and was stopped by its own timeout:
        # queued behind one another, the 2nd would have needed at least two timeouts.
        assert v.warnings.counts == {"timeout": 4}
        assert max(elapsed) < 2 * timeout, elapsed


def test_a_caller_that_finds_every_worker_busy_keeps_its_time_bound():
    with MathVerifier(timeout=8.0, workers=1) as v:
        v.warm_up()
        out: list[float] = []
        first = threading.Thread(target=lambda: out.append(v(*HANG)))
        first.start()
        time.sleep(0.5)  # the one worker is now inside the hang, for 8 s
        v.timeout = 1.0  # this caller's bound (read at the start of each call)
        started = time.monotonic()
        assert v(r"\boxed{3}", "3.0") == 0.0
        waited = time.monotonic() - started
        first.join(60)
        # Gave up after its own 1 s, not when the worker came free (7.5 s later).
        assert waited < 4.0, waited
        assert out == [0.0] and v.warnings.counts == {"timeout": 1, "busy": 1}


def test_worker_started_from_a_short_lived_thread_outlives_it():
    # The kernel's parent-death signal follows the thread that started a child, not the process;
    # workers must survive the end of whichever caller thread happened to start them.
    with MathVerifier(timeout=10.0, workers=1) as v:
        t = threading.Thread(target=v.warm_up)
        t.start()
        t.join(120)
        worker = v._workers._all[0].proc
        time.sleep(1.0)
        assert worker.poll() is None, "the worker died with the thread that started it"
        assert v(r"\boxed{0.25}", r"\frac14") == 1.0
        assert v._workers._all[0].proc is worker and v.warnings.total == 0


def _gone(pid: int) -> bool:
    """Process ``pid`` has exited (a zombie nobody has reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


def _start_parent(code: str) -> tuple[subprocess.Popen, int]:
    """Run ``code`` in a child python that prints one pid (of its own child) and then blocks."""
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    assert line.strip().isdigit(), f"parent printed {line!r}"
    return parent, int(line)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_worker_dies_when_its_parent_is_sigkilled_during_a_hung_check():
    parent, worker = _start_parent(f"""
        import sys, threading, time
        from cobarl.rewards.math import MathVerifier
        v = MathVerifier(timeout=600.0, workers=1)
        v.warm_up()
        pid = v._workers._all[0].proc.pid
        threading.Thread(target=v, args={HANG!r}, daemon=True).start()
        time.sleep(1.0)  # the worker is inside the hung comparison now
        print(pid, flush=True)
        time.sleep(600)
    """)
    try:
        assert not _gone(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(30)
        assert _wait_gone(worker), f"math-verify worker {worker} outlived its SIGKILLed parent"
    finally:
        parent.kill()
        if not _gone(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_parent_watch_fallback_without_the_kernel_signal():
    # What other systems get: no kernel signal, only the polling thread.
    parent, child = _start_parent("""
        import subprocess, sys, time
        code = ("import sys, time; from cobarl.rewards import math_pool as m; m._set_parent_death_signal = lambda: None; "
                "m._die_with_parent(int(sys.argv[1])); print('ready', flush=True); time.sleep(600)")
        import os
        c = subprocess.Popen([sys.executable, '-c', code, str(os.getpid())], stdout=subprocess.PIPE, text=True)
        assert c.stdout.readline().strip() == 'ready'
        print(c.pid, flush=True)
        time.sleep(600)
    """)
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(30)
        assert _wait_gone(child), "the watch thread did not end the orphaned worker"
    finally:
        parent.kill()
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


# --- registry and guard ----------------------------------------------------------------------------


def _raises(completion: str, answer: str) -> float:
    raise RuntimeError("boom")


def _sleeps(completion: str, answer: str) -> float:
    time.sleep(60)  # far longer than any bound below, so a return proves the watchdog fired
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
    assert time.monotonic() - started < 15.0 and slow.warnings.counts["timeout"] == 1

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


def test_a_verifier_that_fails_its_probe_is_refused_naming_what_it_would_have_stopped():
    from cobarl.rewards.guard import GuardedReward
    from cobarl.train.rewards import probe_verifier

    def dead(completion, answer):
        raise RuntimeError("verifier down")

    for before in ("training", "evaluating"):
        with pytest.raises(ValueError, match=rf"verifier down\); fix the verifier \(or raise --reward-timeout\) before {before}$"):
            probe_verifier(GuardedReward(dead, name="dead", timeout=5), ["1", "2", "3"], before=before)
