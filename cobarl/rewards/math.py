"""math-verify reward: extract the final answer, compare it symbolically with the ground truth.

``math_reward(completion, answer)`` is 1.0 when the completion's final answer equals ``answer``
(fractions vs decimals, ``\\boxed{}``, units, intervals, unordered multiple answers, ...) and
0.0 otherwise. Extraction, in order: the text after the last ``</think>``; a ``\\boxed{...}``
(every box counts, so a hedged "\\boxed{7} ... \\boxed{8}" reads as the set {7, 8}); a DAPO-style
last ``Answer: ...`` line; otherwise math-verify's own LaTeX/expression search.

Bounded time, off the main thread. math-verify's own timeouts use ``signal.alarm``, which works only
in the main thread, and a hung thread cannot be killed; sympy can hang for good on inputs such as
``9^{9^{9^9}}``. So every check runs in a separate worker *process* (a plain
``python -c`` child speaking JSON lines over pipes, not `multiprocessing`, so a caller's
unguarded ``__main__`` is never re-imported) with math-verify's timeouts off, and the parent
waits at most ``timeout`` seconds per answer. A worker that overruns is killed and a fresh one is
started at once in the background (~1-2 s to import sympy); that answer scores 0.0 and is counted
in ``MathVerifier.warnings``.

Concurrency. Callers in any thread share a pool of up to ``workers`` processes, started on demand,
so up to ``workers`` hanging checks run side by side and each returns within its own ``timeout``
(a single shared worker would make the n-th caller wait n timeouts). Time spent waiting for a free
worker counts against the caller's ``timeout``; a caller that gets none in time scores 0.0, counted
as ``busy``. Starting a worker (a one-off import) is not counted.

No orphans. A worker dies with its parent whatever ends the parent, SIGKILL included: on Linux the
kernel sends it SIGKILL (``PR_SET_PDEATHSIG``); elsewhere a thread in the worker polls whether its
parent is still there (which cannot run while sympy holds the GIL in C code, hence the kernel way
first), and a worker waiting for work sees its input pipe close.

Input. A completion that is not a string, or an answer that is neither a string nor a number,
scores 0.0 and is counted as ``invalid``: a broken sample never stops a run.

Where a child process cannot be started (``backend="thread"``), checks run in daemon threads:
the time bound still holds for the caller, but a hung check keeps a CPU busy until it ends.
"""

from __future__ import annotations

import atexit
import numbers
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from cobarl.rewards.guard import RewardTimeout, RewardWarnings, call_with_timeout
from cobarl.rewards.math_answers import invalid_input, quiet_math_verify, same_single_box, verify_inline
from cobarl.rewards.math_pool import WorkerPool

DEFAULT_TIMEOUT = 5.0
"""Seconds per answer (parsing both sides and comparing) before it scores 0.0."""
DEFAULT_WORKERS = 4
"""Worker processes the shared verifier may start: this many overlapping calls each keep their time
bound. Workers start only when calls overlap, so a caller that checks one answer at a time runs one."""


class MathVerifier:
    """``verifier(completion, answer) -> 1.0 | 0.0`` with bounded time per answer (see the module docstring).

    Args:
        timeout: seconds per answer, waiting for a free worker included; an overrun scores 0.0 and
            counts as ``timeout`` (or ``busy``: no worker was free in time) in ``warnings``.
        workers: most worker processes, i.e. most checks at once (they start when calls overlap);
            `score` checks that many answers in parallel.
        backend: ``"process"`` (killable workers; the default on POSIX) or ``"thread"`` (daemon threads,
            the default on Windows; a hung check keeps running in the background).
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, workers: int = DEFAULT_WORKERS,
                 backend: str | None = None) -> None:
        if backend is None:  # select() on pipes is POSIX-only
            backend = "thread" if os.name == "nt" else "process"
        if backend not in ("process", "thread"):
            raise ValueError(f"backend must be 'process' or 'thread', got {backend!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not 0 < timeout < float("inf"):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        self.backend = backend
        self.num_workers = workers
        self.warnings = RewardWarnings("math")
        self.__name__ = "math"
        self._workers: WorkerPool | None = None
        self._lock = threading.Lock()

    def _pool(self) -> WorkerPool:
        with self._lock:
            if self._workers is None:
                self._workers = WorkerPool(self.num_workers)
                atexit.register(self.close)
            return self._workers

    def __call__(self, completion: str, answer: str) -> float:
        problem = invalid_input(completion, answer)
        if problem is not None:
            self.warnings.record("invalid", problem)
            return 0.0
        answer = str(answer)
        if same_single_box(completion, answer):
            return 1.0
        if self.backend == "thread":
            return self._call_thread(completion, answer)
        status, value = self._call_process(completion, answer)
        if status == "ok":
            return 1.0 if value else 0.0
        self.warnings.record(status, str(value))
        return 0.0

    def _call_process(self, completion: str, answer: str) -> tuple[str, object]:
        """``("ok", score)`` or a failure kind (``timeout``, ``busy``, ``error``) and its detail."""
        deadline = time.monotonic() + self.timeout
        pool = self._pool()
        worker = pool.acquire(deadline)
        if worker is None:
            return "busy", f"all {pool.size} math-verify workers stayed busy for {self.timeout:g}s"
        try:
            status, value = worker.check(completion, answer, deadline)
        finally:
            pool.release(worker)
        if status == "timeout":
            return status, f"no verdict after {self.timeout:g}s"
        return status, value

    def _call_thread(self, completion: str, answer: str) -> float:
        quiet_math_verify()
        try:
            return call_with_timeout(verify_inline, (completion, answer), self.timeout)
        except RewardTimeout as e:
            self.warnings.record("timeout", str(e))
        except ImportError:
            raise
        except Exception as e:  # noqa: BLE001
            self.warnings.record("error", f"{type(e).__name__}: {e}")
        return 0.0

    def score(self, completions: Sequence[str], answers: Sequence[str]) -> list[float]:
        """Scores of many pairs, checked in parallel across the workers."""
        if len(completions) != len(answers):
            raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
        if self.num_workers == 1 or len(completions) < 2:
            return [self(c, a) for c, a in zip(completions, answers)]
        with ThreadPoolExecutor(self.num_workers) as pool:
            return list(pool.map(self, completions, answers))

    def warm_up(self, workers: int | None = None) -> None:
        """Start ``workers`` (default: all) worker processes now, rather than on the first answers
        (each import takes a second or two)."""
        if self.backend == "process":
            self._pool().start(self.num_workers if workers is None else workers)

    def close(self) -> None:
        """Stop the worker processes (a later call starts new ones)."""
        atexit.unregister(self.close)
        with self._lock:
            if self._workers is not None:
                self._workers.close()
            self._workers = None

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The shared `MathVerifier` behind `math_reward` (``DEFAULT_WORKERS``, ``DEFAULT_TIMEOUT``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
        return _default


def math_reward(completion: str, answer: str) -> float:
    """1.0 if the completion's final answer equals ``answer`` mathematically, else 0.0.

    Never raises for a bad completion (``None`` included) and returns within ~``DEFAULT_TIMEOUT``
    seconds (plus a one-off worker start), also with up to ``DEFAULT_WORKERS`` calls at once from
    other threads; failures score 0.0 and are counted in ``default_verifier().warnings``.

    >>> math_reward(r"so the answer is \\boxed{\\frac{1}{2}}", "0.5")
    1.0
    >>> math_reward("Answer: 7", "8")
    0.0
    """
    return default_verifier()(completion, answer)
