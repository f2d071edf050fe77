"""Atomic files and the allocator state file."""

import json
import os
import re

import pytest

from cobarl import Allocator
from cobarl.io import STATE_FILE, check_state_format, load_state, save_state, write_atomic, write_json


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
    assert load_state(tmp_path / "checkpoint-4", missing_ok=True) is None
    (tmp_path / "checkpoint-3" / STATE_FILE).write_text('{"format": "cobarl.alloc')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_state(tmp_path / "checkpoint-3")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_state(tmp_path / "checkpoint-3", missing_ok=True)


def test_state_formats_are_named_and_refused_across():
    from cobarl.allocator import STATE_FORMAT as ALLOCATOR
    from cobarl.integrations.verl_state import STATE_FORMAT as VERL
    TRL = pytest.importorskip("cobarl.train.trainer").STATE_FORMAT  # needs torch and trl

    assert len({ALLOCATOR, VERL, TRL}) == 3
    check_state_format({"format": TRL, "version": 2}, TRL, 2)
    check_state_format({"version": 2, "micro_step": 4}, TRL, 2, unnamed_key="micro_step")  # before formats had names
    for state, message in [
        ({"format": VERL, "version": 2}, f"not a {TRL} state: its format is '{VERL}'"),
        ({"version": 2, "inflight": []}, f"not a {TRL} state: its format is None"),
        ({"format": TRL, "version": 3}, f"{TRL} state version 3 is not supported"),
        ([], f"not a {TRL} state: a JSON object"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            check_state_format(state, TRL, 2, unnamed_key="micro_step")
