"""Set-up shared by the test modules; plain helpers are in ``helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import save_tiny_model

# Everything the tests load is built locally: never reach for the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny model with the default character tokenizer, saved locally (read-only for tests)."""
    pytest.importorskip("torch")
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def families_model_dir(tmp_path_factory) -> Path:
    """The same for the default task (families-v4): its tokenizer covers the task's characters."""
    pytest.importorskip("torch")
    from cobarl.tasks import families

    return save_tiny_model(tmp_path_factory.mktemp("model") / "families", families.CHARS)


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module's tests: these models are too small to gain from threads, and
    on a shared 2-core machine OpenMP spin-waiting under contention makes each step ~20x slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def verl_world(tmp_path_factory):
    """Ray, TransferQueue and the stubs of the real-verl tests (tests/verl_world.py), once per session:
    test_verl_real.py and test_verl_policies.py share one local Ray."""
    pytest.importorskip("verl")
    pytest.importorskip("transfer_queue")
    import verl_world

    yield from verl_world.start(tmp_path_factory.mktemp("verl_world"))
