"""The worker processes of the math reward: every check runs in a killable child process, so each
answer gets a bounded time (see `cobarl.rewards.math` for why, and for the concurrency rules).

Workers are plain ``python -c`` children speaking JSON lines over pipes (``[completion, answer]``
in, ``["ok", score]`` out), started from one long-lived thread (`_Spawner`) and shared by callers in
any thread through `WorkerPool`. No orphans: a worker dies with its parent whatever ends the parent,
SIGKILL included (``PR_SET_PDEATHSIG`` on Linux; elsewhere a thread polls the parent's pid).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from queue import Queue

from cobarl.rewards.math_answers import quiet_math_verify, verify_inline

STARTUP_TIMEOUT = 120.0
"""Seconds a new worker may take to import math-verify (not counted against any answer)."""
DEFAULT_WORKERS = 4
"""Worker processes the shared verifier may start: this many overlapping calls each keep their time
bound. Workers start only when calls overlap, so a caller that checks one answer at a time runs one."""
PARENT_POLL_SECONDS = 1.0
"""How often a worker checks that its parent is alive where the kernel cannot tell it (not Linux)."""
_PARENT_ENV = "COBARL_MATH_PARENT"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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


def worker_loop() -> None:
    """Body of a worker process: JSON lines ``[completion, answer]`` in, ``["ok", score]`` out."""
    _die_with_parent(int(os.environ.get(_PARENT_ENV) or os.getppid()))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, not into the protocol
    sys.stdout = sys.stderr
    try:
        import math_verify  # noqa: F401

        quiet_math_verify()
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


class ProcessWorker:
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
            [sys.executable, "-c", "from cobarl.rewards.math_pool import worker_loop; worker_loop()"],
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


class WorkerPool:
    """Up to ``size`` workers, started on demand and shared by callers in any thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._cond = threading.Condition()
        self._idle: list[ProcessWorker] = []
        self._all: list[ProcessWorker] = []

    def acquire(self, deadline: float) -> ProcessWorker | None:
        """A free worker (a new one while fewer than ``size`` exist), or None if none is free by ``deadline``."""
        with self._cond:
            while not self._idle and len(self._all) >= self.size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._idle:
                return self._idle.pop()
            worker = ProcessWorker()  # a fork and exec; its slow import runs in the child
            self._all.append(worker)
            return worker

    def release(self, worker: ProcessWorker) -> None:
        with self._cond:
            self._idle.append(worker)
            self._cond.notify()

    def start(self, n: int) -> None:
        """Start workers until ``n`` exist and wait until each has imported math-verify."""
        with self._cond:
            while len(self._all) < min(n, self.size):
                worker = ProcessWorker()
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
