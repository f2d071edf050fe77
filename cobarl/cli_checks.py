"""Checks of command-line options for ``cobarl compare``, ``eval`` and ``bench``, all made before any work.

``type=`` converters: argparse turns an `argparse.ArgumentTypeError` into ``cobarl X: error: argument --opt: <message>``
and exit status 2, before any work starts. ``float("nan")`` and ``float("inf")`` parse without
complaint, and NaN passes every ``<``/``>`` check, so a plain ``type=float`` lets ``--lr nan`` run
to the end and report ``None``; these converters refuse it up front.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


def integer(low: int | None = None) -> Callable[[str], int]:
    """An integer, at least ``low``.

    >>> integer(1)("3")
    3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def number(low: float | None = None, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``above=True``).

    >>> number(0, above=True)("0.5")
    0.5
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if low is not None and (value <= low if above else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {low:g}, got {value:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {value:g}")
        return value

    return parse


def writable_dir(path: Path, what: str = "output") -> None:
    """ValueError naming the problem unless folder ``path`` exists and is writable or can be created.

    Called before a long run so that a bad ``-o``/``--output-dir`` fails now, not after the work.
    Creates nothing: a run that then fails on another option leaves no empty folder behind.
    """
    path = Path(path).absolute()
    existing = path
    while not existing.exists():  # the nearest existing ancestor is where the folder would be made
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write {what} into {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {what} into {path}: {existing} is not writable")
