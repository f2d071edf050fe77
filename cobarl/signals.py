"""SIGTERM handled as Ctrl-C, for every command that keeps finished work when stopped (``cobarl train``,
``cobarl compare``, ``cobarl probe``). Below every other layer: it imports nothing of cobarl."""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm preemption, ``kill``), handled as Ctrl-C: finished work is kept."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread, so the
    Ctrl-C path runs: workers are ended, finished results kept, and the exit status says so."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
