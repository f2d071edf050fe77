"""Which checkpoint a run resumes from: the newest one whose files are all present and intact.

A kill during a save (or a full disk) leaves a checkpoint with missing or truncated files. Loading
it fails deep inside torch or transformers with a message that names no file, or -- for a missing
``optimizer.pt`` -- silently resumes with a fresh optimizer. So before resuming, every file a
resume reads is checked cheaply (without loading tensors): JSON parses, safetensors headers match
the file size, torch zip archives have their central directory. A bad checkpoint is reported by
file, set aside (renamed so neither TRL's rotation nor a later resume picks it up), and the
previous complete one is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from cobarl.io import STATE_FILE
from cobarl.policies.stream import PromptStream

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "adapter_model.safetensors", "adapter_model.bin")


def checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint-N`` directories of ``run_dir``, newest first."""
    found = []
    for p in Path(run_dir).glob("checkpoint-*"):
        suffix = p.name.split("-", 1)[1]
        if p.is_dir() and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]


def buffer_file(rank: int) -> str:
    """A rank's generated batch saved inside a generation (``num_iterations > 1``)."""
    return f"cobarl_buffer_rank{rank}.pt"


def checkpoint_step(checkpoint: Path) -> int:
    return int(Path(checkpoint).name.split("-")[1])


def run_finished(checkpoint: Path | None, max_steps: int, max_generated: int | None) -> bool:
    """Whether a checkpoint ends its run: it reached ``max_steps``, or ``max_generated`` rollouts were generated."""
    if checkpoint is None:
        return False
    if checkpoint_step(checkpoint) >= max_steps:
        return True
    from cobarl.io import load_state

    return max_generated is not None and load_state(checkpoint).get("generated", 0) >= max_generated


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"{path} is not valid JSON ({e})"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
        return f"{path} has no readable safetensors header ({e})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        return f"{path} is truncated ({size} bytes; its header describes {8 + n + end})"
    return None


def _zip_problem(path: Path) -> str | None:
    if not zipfile.is_zipfile(path):
        return f"{path} is truncated or not a torch archive"
    return None


def _file_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path} is missing"
    if path.suffix == ".json":
        return _json_problem(path)
    if path.suffix == ".safetensors":
        return _safetensors_problem(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return _zip_problem(path)
    return None


def _weights_problem(ckpt: Path) -> str | None:
    present = [name for name in WEIGHT_FILES if (ckpt / name).is_file()]
    if not present:
        return f"{ckpt} holds no model weights (none of {', '.join(WEIGHT_FILES)})"
    if present[0] == "model.safetensors.index.json":
        index = json.loads((ckpt / present[0]).read_text())
        for shard in sorted(set(index.get("weight_map", {}).values())):
            problem = _file_problem(ckpt / shard)
            if problem:
                return problem
    return _file_problem(ckpt / present[0])


def checkpoint_problem(ckpt: Path) -> str | None:
    """The first missing or damaged file of ``ckpt`` (a message naming it), or None if it is complete."""
    ckpt = Path(ckpt)
    for name in (STATE_FILE, "trainer_state.json"):
        problem = _file_problem(ckpt / name)
        if problem:
            return problem
    problem = _weights_problem(ckpt)
    if problem:
        return problem
    state = json.loads((ckpt / STATE_FILE).read_text())
    stream = (state.get("allocator") or {}).get("stream")
    if stream is not None and PromptStream.state_problem(stream):  # DAPO's and GRESO's position in the data
        return f"{ckpt / STATE_FILE}: its prompt stream state {PromptStream.state_problem(stream)}"
    world = int(state.get("world_size", 1))
    rng = ["rng_state.pth"] if world == 1 else [f"rng_state_{r}.pth" for r in range(world)]
    needed = ["optimizer.pt", "scheduler.pt", *rng]
    if state.get("mid_generation"):
        needed += [f"cobarl_buffer_rank{r}.pt" for r in range(world)]
    for name in needed:
        problem = _file_problem(ckpt / name)
        if problem:
            return problem
    return None


def last_complete_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of ``run_dir`` with every file present and intact (no side effects)."""
    return next((c for c in checkpoints(Path(run_dir)) if checkpoint_problem(c) is None), None)


def find_checkpoint(run_dir: Path, *, log: Callable[[str], None]) -> tuple[Path | None, list[Path]]:
    """(newest complete checkpoint, the newer damaged ones): each damaged one is reported by file; nothing
    is moved yet, so a resume refused later leaves the run folder as it was."""
    damaged = []
    for ckpt in checkpoints(run_dir):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt, damaged
        log(f"cobarl train: checkpoint {ckpt.name} cannot be resumed: {problem}; falling back to the previous one")
        damaged.append(ckpt)
    return None, damaged


def move_damaged_aside(damaged: list[Path], *, log: Callable[[str], None]) -> None:
    """Rename damaged checkpoints to ``damaged-ckpt-N-<time>``, so neither TRL's rotation nor a later resume
    picks them up, and a new save of step N is not confused with them."""
    for ckpt in damaged:
        target = ckpt.with_name(f"damaged-ckpt-{ckpt.name.split('-', 1)[1]}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(ckpt, target)
        log(f"cobarl train: moved {ckpt} aside to {target}")


def select_checkpoint(run_dir: Path, *, log: Callable[[str], None], set_aside: bool) -> Path | None:
    """Newest complete checkpoint; each newer damaged one is reported by file and, when ``set_aside``
    (the main process), moved aside (`move_damaged_aside`)."""
    checkpoint, damaged = find_checkpoint(run_dir, log=log)
    if set_aside:
        move_damaged_aside(damaged, log=log)
    return checkpoint


@contextlib.contextmanager
def cpu_map_location():
    """With several CPU processes transformers loads the optimizer with ``map_location=args.device``,
    a ``cpu:N`` device that ``torch.load`` cannot restore to ("don't know how to restore data
    location ... cpu:0"); map it to plain ``"cpu"`` while the checkpoint loads."""
    import torch

    original = torch.load

    def load(*args, **kwargs):
        where = kwargs.get("map_location")
        if isinstance(where, torch.device) and where.type == "cpu":
            kwargs["map_location"] = "cpu"
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original
