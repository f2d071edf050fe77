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
in ``MathVerifier.warnings``. Callers in any thread share the workers safely.

Where a child process cannot be started (``backend="thread"``), checks run in daemon threads:
the time bound still holds for the caller, but a hung check keeps a CPU busy until it ends.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from queue import Queue

from cobarl.rewards.registry import RewardTimeout, RewardWarnings, call_with_timeout

DEFAULT_TIMEOUT = 5.0
"""Seconds per answer (parsing both sides and comparing) before it scores 0.0."""
STARTUP_TIMEOUT = 120.0
"""Seconds a new worker may take to import math-verify (not counted against any answer)."""

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
        from cobarl.data.math import last_boxed

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


def _worker_loop() -> None:
    """Body of a worker process: JSON lines ``[completion, answer]`` in, ``["ok", score]`` out."""
    import signal

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
               "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
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

    def check(self, completion: str, answer: str, timeout: float) -> tuple[str, object]:
        """``("ok", score)``, ``("error", message)`` or ``("timeout", None)`` (then the worker is replaced)."""
        self.ensure_ready()
        try:
            self.proc.stdin.write((json.dumps([completion, answer]) + "\n").encode())
            reply = self._readline(time.monotonic() + timeout)
        except (EOFError, BrokenPipeError, OSError, ValueError) as e:
            self.kill()
            self.start()
            return "error", f"worker died: {e}"
        if reply is None:
            self.kill()
            self.start()  # import in the background while the caller moves on
            return "timeout", None
        return reply[0], reply[1]


class MathVerifier:
    """``verifier(completion, answer) -> 1.0 | 0.0`` with bounded time per answer (see the module docstring).

    Args:
        timeout: seconds per answer; an overrun scores 0.0 and counts as ``timeout`` in ``warnings``.
        workers: worker processes (parallel checks for `score`; concurrent callers share them).
        backend: ``"process"`` (killable workers; the default on POSIX) or ``"thread"`` (daemon threads,
            the default on Windows; a hung check keeps running in the background).
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, workers: int = 1, backend: str | None = None) -> None:
        if backend is None:  # select() on pipes is POSIX-only
            backend = "thread" if os.name == "nt" else "process"
        if backend not in ("process", "thread"):
            raise ValueError(f"backend must be 'process' or 'thread', got {backend!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = float(timeout)
        self.backend = backend
        self.num_workers = workers
        self.warnings = RewardWarnings("math")
        self.__name__ = "math"
        self._idle: Queue[_ProcessWorker] | None = None
        self._workers: list[_ProcessWorker] = []
        self._lock = threading.Lock()

    def _pool(self) -> Queue:
        with self._lock:
            if self._idle is None:
                self._workers = [_ProcessWorker() for _ in range(self.num_workers)]
                self._idle = Queue()
                for w in self._workers:
                    self._idle.put(w)
                atexit.register(self.close)
            return self._idle

    def __call__(self, completion: str, answer: str) -> float:
        from cobarl.data.math import last_boxed

        region = completion.rsplit(_THINK_END, 1)[-1]
        if region.count("\\boxed{") + region.count("\\fbox{") == 1:
            boxed = last_boxed(region)
            if boxed is not None and boxed.strip() == str(answer).strip():
                return 1.0  # fast path: one box holding the very text of the answer
        if self.backend == "thread":
            return self._call_thread(completion, answer)
        idle = self._pool()
        worker = idle.get()
        try:
            status, value = worker.check(completion, str(answer), self.timeout)
        finally:
            idle.put(worker)
        if status == "ok":
            return 1.0 if value else 0.0
        if status == "timeout":
            self.warnings.record("timeout", f"no verdict after {self.timeout:g}s")
        else:
            self.warnings.record("error", str(value))
        return 0.0

    def _call_thread(self, completion: str, answer: str) -> float:
        _quiet_math_verify()
        try:
            return call_with_timeout(verify_inline, (completion, str(answer)), self.timeout)
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

    def warm_up(self) -> None:
        """Start the workers now (imports take a second or two) rather than on the first answer."""
        if self.backend == "process":
            for w in list(self._pool().queue):
                w.ensure_ready()

    def close(self) -> None:
        """Stop the worker processes (a later call starts new ones)."""
        atexit.unregister(self.close)
        with self._lock:
            for w in self._workers:
                w.kill()
            self._workers, self._idle = [], None

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The shared `MathVerifier` behind `math_reward` (one worker, ``DEFAULT_TIMEOUT``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
        return _default


def math_reward(completion: str, answer: str) -> float:
    """1.0 if the completion's final answer equals ``answer`` mathematically, else 0.0.

    Never raises for a bad completion and returns within ~``DEFAULT_TIMEOUT`` seconds (plus a
    one-off worker start); failures are counted in ``default_verifier().warnings``.

    >>> math_reward(r"so the answer is \\boxed{\\frac{1}{2}}", "0.5")
    1.0
    >>> math_reward("Answer: 7", "8")
    0.0
    """
    return default_verifier()(completion, answer)
