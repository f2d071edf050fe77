"""Atomic files and the allocator state file."""

import json
import os

import pytest

from cobarl import Allocator
from cobarl.io import STATE_FILE, load_state, save_state, write_atomic, write_json


def test_write_is_all_or_nothing(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})

    def crash(f):
        f.write('{"a": 2, "half')
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, crash)
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["summary.json"]  # no temporary file left behind
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_state_round_trip_and_damaged_files(tmp_path):
    alloc = Allocator(strategy="coba")
    alloc.observe([1, 1, 2], [1.0, 0.0, 1.0])
    save_state(tmp_path / "checkpoint-3", alloc.state_dict())
    back = Allocator(strategy="coba")
    back.load_state_dict(load_state(tmp_path / "checkpoint-3"))
    assert back.state_dict() == alloc.state_dict()
    with pytest.raises(FileNotFoundError, match="checkpoint-4/cobarl_state.json is missing"):
        load_state(tmp_path / "checkpoint-4")
    (tmp_path / "checkpoint-3" / STATE_FILE).write_text('{"format": "cobarl.alloc')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_state(tmp_path / "checkpoint-3")
