"""Two processes (``torchrun --nproc_per_node 2``, gloo, CPU): exact global budget, one plan for all ranks.

The test launches this file under torchrun; each rank runs `cobarl.train.run.run` with a
*stochastic* callable allocator (seeded differently on each rank, so independent planning would
disagree) and records every plan it used and its final allocator state.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, free_port, subprocess_env, torchrun, venv_script

pytestmark = pytest.mark.slow  # end-to-end: real processes (see the README for the quick loop)

ROLLOUTS, PROMPTS, STEPS = 16, 4, 3


def stochastic_allocation(pass_rates, total_budget, min_budget, max_budget):
    """Random counts from a per-process RNG: two ranks planning on their own would disagree."""
    rng = stochastic_allocation.rng
    counts = np.full(len(pass_rates), min_budget, dtype=np.int64)
    for i in rng.choice(len(pass_rates), size=total_budget - counts.sum()):
        counts[i] += 1
    over = counts > max_budget  # push any excess onto prompts with room, deterministically
    spare = int((counts[over] - max_budget).sum())
    counts[over] = max_budget
    for i in np.argsort(counts):
        take = min(spare, max_budget - counts[i])
        counts[i] += take
        spare -= take
    return counts


def resume_worker(model_dir: str, out_dir: str, mode: str) -> None:
    """A deterministic (coba) 2-process run, from scratch (``full``) or resumed (``resume``)."""
    import torch

    from cobarl.train.config import make_config
    from cobarl.train.run import run
    from cobarl.train.trainer import AdaptiveGRPOTrainer

    torch.set_num_threads(1)
    plans, inner = [], AdaptiveGRPOTrainer._plan_generation

    def recording(self, inputs):
        ids, counts, rows = inner(self, inputs)
        plans.append({"step": self.state.global_step, "ids": [int(i) for i in ids], "counts": counts.tolist()})
        return ids, counts, rows

    AdaptiveGRPOTrainer._plan_generation = recording
    config = make_config(dict(
        model=model_dir, output_dir=str(Path(out_dir) / "run"), max_steps=STEPS, save_steps=1, seed=3,
        prompts_per_step=PROMPTS, rollouts_per_step=ROLLOUTS, max_budget=8, train_size=16, eval_size=8,
        max_completion_length=4, learning_rate=1e-2, progress=False, device="cpu", resume=mode == "resume",
        reward="helpers:parity_reward",
    ))
    run(config, log=lambda _: None)
    rank = int(os.environ["RANK"])
    Path(out_dir, f"{mode}-rank{rank}.json").write_text(json.dumps({"plans": plans}))


def worker(model_dir: str, out_dir: str) -> None:
    import torch

    from cobarl import Allocator, StrategyConfig
    from cobarl.train.config import make_config
    from cobarl.train.run import run
    from cobarl.train.trainer import AdaptiveGRPOTrainer

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    stochastic_allocation.rng = np.random.default_rng(1000 + rank)
    plans, inner = [], AdaptiveGRPOTrainer._plan_generation

    def recording(self, inputs):
        ids, counts, rows = inner(self, inputs)
        plans.append({"ids": [int(i) for i in ids], "counts": counts.tolist(), "rows": len(rows), "local": len(inputs),
                      "step": self.state.global_step})
        return ids, counts, rows

    AdaptiveGRPOTrainer._plan_generation = recording
    config = make_config(dict(
        model=model_dir, output_dir=str(Path(out_dir) / "run"), max_steps=STEPS, save_steps=2,
        prompts_per_step=PROMPTS, rollouts_per_step=ROLLOUTS, max_budget=8, train_size=16, eval_size=8,
        max_completion_length=4, learning_rate=1e-2, progress=False, device="cpu",
        reward="helpers:parity_reward",
    ))
    alloc = Allocator(StrategyConfig(strategy=stochastic_allocation, min_budget=2, max_budget=8))
    summary = run(config, log=lambda _: None, allocator=alloc)
    result = {"plans": plans, "state": alloc.state_dict(), "summary": summary.__dict__ if summary else None}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result, default=str))


def dapo_failing_worker(model_dir: str, out_dir: str) -> None:
    """dapo on two processes with a reward that never varies: the main process's policy stops the step."""
    from cobarl.train.config import make_config
    from cobarl.train.run import run

    config = make_config(dict(
        model=model_dir, output_dir=str(Path(out_dir) / "run"), max_steps=STEPS, strategy="dapo", max_gen_batches=2,
        prompts_per_step=PROMPTS, rollouts_per_step=ROLLOUTS, train_size=16, eval_size=8,
        max_completion_length=4, progress=False, device="cpu", reward="helpers:constant_reward",
    ))
    run(config, log=lambda _: None)


def rounds_worker(model_dir: str, out_dir: str) -> None:
    """reinforce-ada on two processes: each rank records the rows of every generation call it made."""
    import torch

    from cobarl.train.config import make_config
    from cobarl.train.run import run
    from cobarl.train.trainer import AdaptiveGRPOTrainer

    torch.set_num_threads(1)
    calls, inner = [], AdaptiveGRPOTrainer._generate_round

    def recording(self, rows, log):
        world = self.accelerator.num_processes
        calls.append({"step": self.state.global_step, "rows": len(rows), "local": -(-len(rows) // world)})
        return inner(self, rows, log)

    AdaptiveGRPOTrainer._generate_round = recording
    config = make_config(dict(
        model=model_dir, output_dir=str(Path(out_dir) / "run"), max_steps=STEPS, save_steps=2, strategy="reinforce-ada",
        round_size=5, max_rounds=3, prompts_per_step=PROMPTS, rollouts_per_step=ROLLOUTS, train_size=16,
        eval_size=8, max_completion_length=4, learning_rate=1e-2, progress=False, device="cpu",
        reward="helpers:parity_reward",
    ))
    run(config, log=lambda _: None)
    Path(out_dir, f"rounds-rank{os.environ['RANK']}.json").write_text(json.dumps({"calls": calls}))


def _torchrun(tmp: Path, *args: str) -> None:
    torchrun(tmp, __file__, *args)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_model_dir):
    pytest.importorskip("trl")
    tmp = tmp_path_factory.mktemp("mp")
    _torchrun(tmp, str(tiny_model_dir), str(tmp))
    return tmp, [json.loads((tmp / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_every_optimizer_step_spends_the_global_budget(two_process_run):
    tmp, ranks = two_process_run
    for r in ranks:
        assert len(r["plans"]) == STEPS  # one allocation per optimizer step, not one per rank or micro-step
        for plan in r["plans"]:
            assert sum(plan["counts"]) == plan["rows"] == ROLLOUTS and plan["local"] == ROLLOUTS // 2
    rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]  # written once (main process), not once per rank
    assert all(row["rollout/count"] == ROLLOUTS for row in rows)
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert summary["rollouts"] == STEPS * ROLLOUTS and summary["processes"] == 2 and summary["allocations"] == STEPS
    assert ranks[0]["summary"]["steps"] == STEPS and ranks[1]["summary"] is None
    from cobarl.train.checkpoints import checkpoint_problem

    assert checkpoint_problem(tmp / "run" / "checkpoint-3") is None  # both ranks' RNG states are there


def test_ranks_share_one_plan_and_end_with_identical_allocator_state(two_process_run):
    _, (r0, r1) = two_process_run
    assert [p["ids"] for p in r0["plans"]] == [p["ids"] for p in r1["plans"]]
    assert [p["counts"] for p in r0["plans"]] == [p["counts"] for p in r1["plans"]]
    assert any(len(set(p["counts"])) > 1 for p in r0["plans"])  # the stochastic allocator did act
    assert json.dumps(r0["state"]["stats"], sort_keys=True) == json.dumps(r1["state"]["stats"], sort_keys=True)
    assert json.dumps(r0["state"]["tracker"], sort_keys=True) == json.dumps(r1["state"]["tracker"], sort_keys=True)


def test_two_process_resume_is_exact(tmp_path, tiny_model_dir):
    """Killed after step 2 (its newest checkpoint gone), resumed with the same launch: the same
    plan for step 3 and the same final allocator state on both ranks as the uninterrupted run."""
    pytest.importorskip("trl")
    import shutil

    model_dir = str(tiny_model_dir)
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir()
    _torchrun(full, model_dir, str(full), "full")
    shutil.copytree(full / "run", cut / "run")
    shutil.rmtree(cut / "run" / "checkpoint-3")
    (cut / "run" / "summary.json").unlink()
    _torchrun(cut, model_dir, str(cut), "resume")
    for rank in (0, 1):
        before = json.loads((full / f"full-rank{rank}.json").read_text())["plans"]
        after = json.loads((cut / f"resume-rank{rank}.json").read_text())["plans"]
        assert [p["step"] for p in after] == [2]  # only step 3 was redone (planned at global step 2)
        assert after[0]["ids"] == before[2]["ids"] and after[0]["counts"] == before[2]["counts"]
    saved = [json.loads((d / "run" / "checkpoint-3" / "cobarl_state.json").read_text())["allocator"] for d in (full, cut)]
    assert saved[0] == saved[1]


def test_two_process_rounds_log_what_every_rank_generated(tmp_path, tiny_model_dir):
    """Reinforce-Ada on 2 processes: the logged rollouts generated per step are the rows every rank generated
    (padding to the world size excluded), each round is one generation call per rank, and each step trains
    exactly rollouts_per_step rows."""
    pytest.importorskip("trl")
    _torchrun(tmp_path, str(tiny_model_dir), str(tmp_path), "rounds")
    ranks = [json.loads((tmp_path / f"rounds-rank{r}.json").read_text())["calls"] for r in (0, 1)]
    assert [(c["step"], c["rows"]) for c in ranks[0]] == [(c["step"], c["rows"]) for c in ranks[1]]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    for k, row in enumerate(rows):
        mine = [c for c in ranks[0] if c["step"] == k]
        generated_by_ranks = sum(2 * c["local"] for c in mine)  # both ranks, padding included
        padding = sum(2 * c["local"] - c["rows"] for c in mine)
        assert row["rollout/count"] == generated_by_ranks - padding == sum(c["rows"] for c in mine)
        assert row["rollout/rounds"] == len(mine) and 1 <= len(mine) <= 3
        assert row["rollout/trained"] == ROLLOUTS and row["rollout/count"] >= PROMPTS * 5
    assert any(c["rows"] % 2 for c in ranks[0])  # some round had an odd row count: padding was exercised
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rollouts"] == sum(row["rollout/count"] for row in rows)
    assert summary["rollouts_trained"] == STEPS * ROLLOUTS


def test_two_process_policy_error_stops_every_rank(tmp_path, tiny_model_dir):
    """A policy error on the main process (DAPO's cap) reaches the other rank, which stops with it instead of
    waiting for a round that never comes."""
    import subprocess

    pytest.importorskip("trl")
    res = subprocess.run(
        [str(venv_script("torchrun")), "--nproc_per_node", "2", "--master_port", str(free_port()), __file__,
         str(tiny_model_dir), str(tmp_path), "dapo-fails"],
        capture_output=True, text=True, timeout=300, env=subprocess_env(), cwd=tmp_path,
    )
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "max_gen_batches" in out and "the main process stopped the step" in out, out[-3000:]


def readme_command(launcher: str) -> list[str]:
    """The ``.venv/bin/<launcher> ...`` command of the README's "Multi-process training" section,
    continuation lines joined, split as the shell would."""
    section = (REPO / "README.md").read_text().split("\n## Multi-process training\n", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.replace("\\\n", " ").splitlines()]
    found = [line for line in lines if line.startswith(f".venv/bin/{launcher} ")]
    assert len(found) == 1, f"the README's multi-process section should show one {launcher} command, found {found}"
    return shlex.split(found[0])


def _replace(args: list[str], flag: str, value: str) -> None:
    assert flag in args, f"{flag} is no longer in the README's command: {shlex.join(args)}"
    args[args.index(flag) + 1] = value


def test_readme_accelerate_launch_line_spends_the_global_budget(tmp_path, families_model_dir):
    """The README's ``accelerate launch`` line as written, with only its output directory replaced and the
    run made small (2 steps, a local random model instead of the warm-started default, a small eval set)."""
    pytest.importorskip("trl")
    pytest.importorskip("accelerate")
    args = readme_command("accelerate")
    assert args[:2] == [".venv/bin/accelerate", "launch"] and "--num_processes" in args, args
    processes = int(args[args.index("--num_processes") + 1])
    rollouts = int(args[args.index("--rollouts-per-step") + 1])
    args[0] = str(venv_script("accelerate"))
    args[2:2] = ["--main_process_port", str(free_port())]  # not the fixed default 29500: runs may overlap
    run_dir = tmp_path / "run"
    _replace(args, "--output-dir", str(run_dir))
    _replace(args, "--max-steps", "2")
    args += ["--model", str(families_model_dir), "--eval-size", "8", "--max-completion-length", "4", "--no-progress"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600, env=subprocess_env(), cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert processes == 2
    spent = f"2 x {rollouts} rollouts trained across {processes} process(es)"
    assert spent in res.stdout, res.stdout[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == processes and summary["allocations"] == 2 and summary["rollouts"] == 2 * rollouts
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2] and all(row["rollout/count"] == rollouts for row in rows)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[3] == "rounds":
        rounds_worker(sys.argv[1], sys.argv[2])
    elif len(sys.argv) > 3 and sys.argv[3] == "dapo-fails":
        dapo_failing_worker(sys.argv[1], sys.argv[2])
    elif len(sys.argv) > 3:
        resume_worker(sys.argv[1], sys.argv[2], sys.argv[3])
    else:
        worker(sys.argv[1], sys.argv[2])
