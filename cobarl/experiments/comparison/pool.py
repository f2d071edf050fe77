"""Worker processes: workers ignore Ctrl-C and die with their parent, and a stopped pool ends its running
workers (``cobarl compare``, ``cobarl probe``). SIGTERM as Ctrl-C in the parent: `cobarl.signals`."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ProcessPoolExecutor

def ignore_sigint() -> None:
    # A terminal's Ctrl-C reaches the whole process group; the parent alone decides what to keep.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the parent's SIGTERM handler (`cobarl.signals.sigterm_as_interrupt`): restore the
    # default, or the SIGTERM that ends it (its parent's death, `stop_pool`) raises inside its run, and it can live on
    # holding the parent's folder lock (an inherited file descriptor), so the comparison cannot be continued.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # A worker whose parent died (SIGKILL, a crash) must not live on re-parented: Linux ends it with its parent.
    _die_with_parent()


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the kernel sends SIGTERM to this process when its parent dies (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued runs and end the running ones now: ``shutdown`` alone lets running runs
    finish, and leaving its ``with`` block waits for every queued one (Python < 3.14 has no
    ``terminate_workers``)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    # The pool's manager thread may still register a worker after the first look: look again.
    processes += [p for p in (getattr(pool, "_processes", None) or {}).values() if p not in processes]
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(10)
        if process.is_alive():  # a worker slow to die on a loaded machine: no orphan either way
            process.kill()
            process.join()


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
