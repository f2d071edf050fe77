"""Plain helpers shared by the tests (the fixtures built from them are in ``conftest.py``).

Test modules import them as ``from helpers import ...``: pytest puts ``tests/`` on ``sys.path``
(rootdir-relative imports, no package), and subprocesses get it through ``subprocess_env``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
DATA = TESTS / "data"


def parity_reward(completion: str, answer: str) -> float:
    """Mixed outcomes even for a random model (used as ``--reward helpers:parity_reward``)."""
    return float(len(completion) % 2 == len(answer) % 2)


def constant_reward(completion: str, answer: str) -> float:
    """Every completion scores 1: no group ever has mixed rewards."""
    return 1.0


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess under test: offline, one OpenMP thread, the repository and
    ``tests/`` importable (for ``--reward helpers:...`` and workers launched from a test file)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), **extra}


def run_module(module: str, *args: str, timeout: float = 300, cwd: Path = REPO,
               **env: str) -> subprocess.CompletedProcess:
    """``python -m module args...`` in ``subprocess_env(**env)``, output captured as text."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env(**env), cwd=cwd)


def venv_script(name: str) -> Path:
    """A console script (``torchrun``, ``accelerate``) installed next to this interpreter."""
    return Path(sys.executable).with_name(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_tiny_model(path: Path, chars: str | None = None) -> Path:
    """A random tiny Qwen2 (seed 0) and its character tokenizer saved to ``path``, as from the Hub."""
    from cobarl.models.tiny import build_model, build_tokenizer

    tok = build_tokenizer() if chars is None else build_tokenizer(chars)
    build_model(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def torchrun(cwd: Path, script: str, *args: str, processes: int = 2) -> None:
    """``torchrun --nproc_per_node <processes> script args...`` on a free port, run in ``cwd``; must succeed."""
    res = subprocess.run(
        [str(venv_script("torchrun")), "--nproc_per_node", str(processes), "--master_port", str(free_port()),
         script, *args],
        capture_output=True, text=True, timeout=600, env=subprocess_env(), cwd=cwd,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]


def verl_grpo_advantages(rewards, index) -> list[float]:
    """verl's ``compute_grpo_outcome_advantage`` (at 4f80e46, the DAPO recipe's reproduction pin, and today's,
    ``norm_adv_by_std_in_grpo=True``; GRESO's copy at b277843 is the same), its loop as written, in torch on
    the CPU: float32 scores, per-uid torch.mean and torch.std, a uid of one (0, 1). Needs torch."""
    from collections import defaultdict

    import torch

    scores = torch.tensor(rewards, dtype=torch.float32)
    id2score, id2mean, id2std = defaultdict(list), {}, {}
    with torch.no_grad():
        for i in range(len(scores)):
            id2score[index[i]].append(scores[i])
        for idx in id2score:
            if len(id2score[idx]) == 1:
                id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
            else:
                stacked = torch.stack(id2score[idx])
                id2mean[idx], id2std[idx] = torch.mean(stacked), torch.std(stacked)
        for i in range(len(scores)):
            scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + 1e-6)
    return scores.tolist()
