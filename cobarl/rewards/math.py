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
import ctypes
import json
import numbers
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from queue import Queue

from cobarl.rewards.guard import RewardTimeout, RewardWarnings, call_with_timeout

DEFAULT_TIMEOUT = 5.0
"""Seconds per answer (parsing both sides and comparing) before it scores 0.0."""
STARTUP_TIMEOUT = 120.0
"""Seconds a new worker may take to import math-verify (not counted against any answer)."""
DEFAULT_WORKERS = 4
"""Worker processes the shared verifier may start: this many overlapping calls each keep their time
bound. Workers start only when calls overlap, so a caller that checks one answer at a time runs one."""
PARENT_POLL_SECONDS = 1.0
"""How often a worker checks that its parent is alive where the kernel cannot tell it (not Linux)."""
_PARENT_ENV = "COBARL_MATH_PARENT"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_THINK_END = "</think>"
_ANSWER_LINE = re.compile(r"^\s*[*_#]*\s*(?:final\s+)?answer\s*[:：][*_]*\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


# --- the check itself (runs inside a worker) -------------------------------------------------------


def _answer_region(completion: str) -> str:
    """What to extract from: after ``</think>``; a last ``Answer: x`` line becomes ``\\boxed{x}``."""
    text = completion.rsplit(_THINK_END, 1)[-1]
    if "\\boxed" in text or "\\fbox" in text:
        return text
    lines = _ANSWER_LINE.findall(text)
    if lines:
        value = lines[-1].strip().rstrip(".").strip()
        if len(value) >= 2 and value[0] == value[-1] == "$":
            value = value[1:-1]
        return f"\\boxed{{{value}}}"
    return text


@lru_cache(maxsize=8192)
def _parse_gold(answer: str) -> tuple:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = answer.strip()
    if len(text) >= 2 and text[0] == text[-1] == "$" and text[-2] != "\\":
        text = text[1:-1]
    if "\\boxed" not in text:
        text = f"\\boxed{{{text}}}"
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    return tuple(parse(text, extraction_config=configs, parsing_timeout=None))


def _normalise(text: str) -> str:
    return re.sub(r"\s+|\\[,;!: ]|\\left|\\right|^\$|\$$", "", text).rstrip(".")


def verify_inline(completion: str, answer: str) -> float:
    """The comparison, in this thread, with no time bound (math-verify timeouts off): use `math_reward`."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    region = _answer_region(completion)
    gold = list(_parse_gold(answer))
    if not gold:  # an answer math-verify cannot read: fall back to comparing the text
        from cobarl.answers import last_boxed

        boxed = last_boxed(region)
        return float(boxed is not None and _normalise(boxed) == _normalise(answer))
    pred = parse(
        region,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        extraction_mode="first_match",
        parsing_timeout=None,
    )
    return float(bool(verify(gold, pred, timeout_seconds=None)))


def _quiet_math_verify() -> None:
    import logging

    # "Timeout is disabled ..." is expected here: the parent bounds the time.
    for name in ("math_verify", "math_verify.parser", "math_verify.grader", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _set_parent_death_signal() -> None:
    """Linux: have the kernel SIGKILL this process when its parent ends (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no usable libc: the polling thread of _die_with_parent remains
        pass


def _die_with_parent(parent: int) -> None:
    """Exit when process ``parent`` does, however it ends (see "No orphans" in the module docstring)."""
    _set_parent_death_signal()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)

    def poll() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(0)

    threading.Thread(target=poll, daemon=True, name="cobarl-parent-watch").start()


def _worker_loop() -> None:
    """Body of a worker process: JSON lines ``[completion, answer]`` in, ``["ok", score]`` out."""
    _die_with_parent(int(os.environ.get(_PARENT_ENV) or os.getppid()))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, not into the protocol
    sys.stdout = sys.stderr
    try:
        import math_verify  # noqa: F401

        _quiet_math_verify()
        proto.write(json.dumps(["ready", None]) + "\n")
    except Exception as e:  # noqa: BLE001
        proto.write(json.dumps(["fatal", f"{type(e).__name__}: {e}"]) + "\n")
        return
    for line in sys.stdin:
        try:
            completion, answer = json.loads(line)
            reply = ["ok", verify_inline(completion, answer)]
        except Exception as e:  # noqa: BLE001 - reported to the parent, which scores 0 and counts it
            reply = ["error", f"{type(e).__name__}: {e}"]
        proto.write(json.dumps(reply) + "\n")


# --- the parent side -------------------------------------------------------------------------------


class _Spawner:
    """Starts worker processes from one thread that lives as long as this process.

    The kernel's parent-death signal fires when the *thread* that started the child ends, not the
    process (prctl(2)): a worker started from a caller's short-lived thread (a ThreadPoolExecutor's,
    a trainer's reward thread) would be killed when that thread exits.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._jobs: Queue[tuple[Callable[[], object], Future]] = Queue()
        threading.Thread(target=self._serve, daemon=True, name="cobarl-math-spawner").start()

    def _serve(self) -> None:
        while True:
            fn, future = self._jobs.get()
            try:
                future.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                future.set_exception(e)

    def run(self, fn: Callable[[], object]) -> object:
        future: Future = Future()
        self._jobs.put((fn, future))
        return future.result()


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _popen(*args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` run by the `_Spawner` thread."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner.pid != os.getpid():  # a forked child has no spawner thread
            _spawner = _Spawner()
        spawner = _spawner
    return spawner.run(lambda: subprocess.Popen(*args, **kwargs))


class _ProcessWorker:
    """One worker process and a line reader with a deadline."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self._buf = b""
        self.ready = False
        self.start()

    def start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # so the child imports this very cobarl
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", _PARENT_ENV: str(os.getpid())}
        self.proc = _popen(
            [sys.executable, "-c", "from cobarl.rewards.math import _worker_loop; _worker_loop()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0,
        )
        self._buf = b""
        self.ready = False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        self.proc = None

    def _readline(self, deadline: float) -> list | None:
        """The next reply, or None at the deadline; EOFError if the worker died."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("math-verify worker exited")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def ensure_ready(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            self.start()
        if self.ready:
            return
        reply = self._readline(time.monotonic() + STARTUP_TIMEOUT)
        if reply is None or reply[0] != "ready":
            self.kill()
            detail = "timed out importing math-verify" if reply is None else reply[1]
            raise ImportError(f"math-verify worker could not start: {detail}. "
                              "Install it with pip install 'cobarl[math]'.")
        self.ready = True

    def check(self, completion: str, answer: str, deadline: float) -> tuple[str, object]:
        """``("ok", score)``, ``("error", message)`` or ``("timeout", None)`` (then the worker is replaced).

        ``deadline`` (``time.monotonic()``) is moved back by the time a new worker takes to start:
        that one-off import is not the answer's fault.
        """
        started = time.monotonic()
        self.ensure_ready()
        deadline += time.monotonic() - started
        try:
            self.proc.stdin.write((json.dumps([completion, answer]) + "\n").encode())
            reply = self._readline(deadline)
        except (EOFError, BrokenPipeError, OSError, ValueError) as e:
            self.kill()
            self.start()
            return "error", f"worker died: {e}"
        if reply is None:
            self.kill()
            self.start()  # import in the background while the caller moves on
            return "timeout", None
        return reply[0], reply[1]


class _Pool:
    """Up to ``size`` workers, started on demand and shared by callers in any thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._cond = threading.Condition()
        self._idle: list[_ProcessWorker] = []
        self._all: list[_ProcessWorker] = []

    def acquire(self, deadline: float) -> _ProcessWorker | None:
        """A free worker (a new one while fewer than ``size`` exist), or None if none is free by ``deadline``."""
        with self._cond:
            while not self._idle and len(self._all) >= self.size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._idle:
                return self._idle.pop()
            worker = _ProcessWorker()  # a fork and exec; its slow import runs in the child
            self._all.append(worker)
            return worker

    def release(self, worker: _ProcessWorker) -> None:
        with self._cond:
            self._idle.append(worker)
            self._cond.notify()

    def start(self, n: int) -> None:
        """Start workers until ``n`` exist and wait until each has imported math-verify."""
        with self._cond:
            while len(self._all) < min(n, self.size):
                worker = _ProcessWorker()
                self._all.append(worker)
                self._idle.append(worker)
            workers = list(self._all)
        for w in workers:
            w.ensure_ready()

    def close(self) -> None:
        with self._cond:
            for w in self._all:
                w.kill()
            self._all, self._idle = [], []
            self._cond.notify_all()


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
        self._workers: _Pool | None = None
        self._lock = threading.Lock()

    def _pool(self) -> _Pool:
        with self._lock:
            if self._workers is None:
                self._workers = _Pool(self.num_workers)
                atexit.register(self.close)
            return self._workers

    def __call__(self, completion: str, answer: str) -> float:
        problem = _invalid_input(completion, answer)
        if problem is not None:
            self.warnings.record("invalid", problem)
            return 0.0
        answer = str(answer)
        if _same_single_box(completion, answer):
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
        _quiet_math_verify()
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


def _invalid_input(completion: object, answer: object) -> str | None:
    """Why this pair cannot be checked, or None. Numbers are fine answers (parquet columns hold ints)."""
    if not isinstance(completion, str):
        return f"completion is {type(completion).__name__}, not str"
    if isinstance(answer, bool) or not isinstance(answer, (str, numbers.Real)):
        return f"answer is {type(answer).__name__}, not str or a number"
    return None


def _same_single_box(completion: str, answer: str) -> bool:
    """Fast path, no worker: the answer region has one box and it holds the very text of the answer."""
    from cobarl.answers import last_boxed

    region = completion.rsplit(_THINK_END, 1)[-1]
    if region.count("\\boxed{") + region.count("\\fbox{") != 1:
        return False
    boxed = last_boxed(region)
    return boxed is not None and boxed.strip() == answer.strip()


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
