"""Files that are either whole or absent: atomic writes and the one state file (``cobarl_state.json``).

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
    """Write a state (an :class:`~cobarl.Allocator`'s, the TRL trainer's checkpoint state or the verl
    plugin's) to ``<directory>/cobarl_state.json`` atomically, creating the folder.

    The one state-file writer; each state names its ``format`` and ``version``, checked on reading by
    :func:`check_state_format`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return write_json(directory / STATE_FILE, state)


def load_state(directory: str | os.PathLike, *, missing_ok: bool = False) -> dict[str, Any] | None:
    """Read ``<directory>/cobarl_state.json``: a missing file is an error naming it (``None`` with
    ``missing_ok=True``), an unreadable one always an error naming it."""
    path = Path(directory) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if missing_ok:
            return None
        raise FileNotFoundError(f"{path} is missing: this checkpoint has no cobarl state") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the checkpoint is damaged") from None


def check_state_format(state: Any, fmt: str, version: int, *, unnamed_key: str | None = None) -> None:
    """Refuse, with a message, a state of another format than ``fmt`` or another version than ``version``.

    ``unnamed_key``: a key found only in this format's files written before states named their format
    (version 2 without ``format``); such a file is read as this format.
    """
    if not isinstance(state, dict):
        raise ValueError(f"not a {fmt} state: a JSON object was expected, got {type(state).__name__}")
    saved = state.get("format")
    if saved is None and unnamed_key is not None and unnamed_key in state and state.get("version") == 2:
        saved = fmt
    if saved != fmt:
        raise ValueError(f"not a {fmt} state: its format is {saved!r}" + ("" if saved else " (none given)"))
    if state.get("version") != version:
        raise ValueError(f"{fmt} state version {state.get('version')!r} is not supported (this cobarl reads {version})")


LOCK_FILE = ".cobarl.lock"


class FolderLock:
    """An exclusive ``fcntl.flock`` on ``<folder>/.cobarl.lock``, so two cobarl processes never write
    into the same run or report folder. The kernel releases it when its holder dies (even by SIGKILL),
    so a stale lock never blocks a later run; the file itself stays (removing it would race a waiter).

    >>> import tempfile
    >>> with FolderLock(tempfile.mkdtemp(), "run") as lock:
    ...     lock.held
    True
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run") -> None:
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None
        self.created = self.created_file = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        import fcntl

        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        self.created_file = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FileExistsError(
                f"another cobarl process (pid {holder}) is writing a {self.what} into {self.folder}; wait for it to end, "
                "or pick another output folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self, *, remove_if_created: bool = False) -> None:
        """Give the lock up; with ``remove_if_created`` (a refusal before any work), also remove the lock
        file and the folder if this lock created them and the folder holds nothing else, so a refused
        run leaves nothing behind."""
        if self._fd is None:
            return
        if remove_if_created and self.created_file:
            (self.folder / LOCK_FILE).unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        if remove_if_created and self.created and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
