"""Files that are either whole or absent: atomic writes and the allocator state file.

A run killed mid-write (Ctrl-C, SIGKILL, a full disk) must never leave a half-written summary,
config or checkpoint state that a later ``--resume`` would trust. Every file cobarl writes goes
through :func:`write_atomic`: a temporary file in the same folder, fsynced, then renamed over the
target (atomic on POSIX).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_FILE = "cobarl_state.json"


def write_atomic(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool = False) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    # Mode 0666 filtered by the umask, like any new file (mkstemp would make it 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None) -> Path:
    return write_atomic(path, lambda f: json.dump(obj, f, indent=indent))


def save_state(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write an allocator ``state_dict()`` (with any extra keys) to ``<directory>/cobarl_state.json``.

    The one state file of the TRL trainer and the verl plugin; its ``format`` and ``version``
    fields (see :meth:`cobarl.Allocator.state_dict`) are checked by :meth:`cobarl.Allocator.load_state_dict`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return write_json(directory / STATE_FILE, state)


def load_state(directory: str | os.PathLike) -> dict[str, Any]:
    """Read ``<directory>/cobarl_state.json``; a missing or unreadable file is an error naming it."""
    path = Path(directory) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: this checkpoint has no cobarl allocator state") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the checkpoint is damaged") from None
