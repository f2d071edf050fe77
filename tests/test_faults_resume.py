"""Fault injection (issue 25, train side): nothing silently wrong after a resume. Finding numbers refer
to the issue; docs/reliability.md maps each promise to its test."""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from cobarl.io import LOCK_FILE, load_state  # noqa: E402
from cobarl.policies import PromptStream  # noqa: E402
from cobarl.rewards import GuardedReward  # noqa: E402
from cobarl.train.checkpoints import checkpoint_problem, select_checkpoint  # noqa: E402
from cobarl.train.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SMALL = ["--max-steps", "2", "--save-steps", "1", "--prompts-per-step", "4", "--rollouts-per-prompt", "4",
         "--max-budget", "8", "--eval-size", "8", "--max-completion-length", "4", "--learning-rate", "1e-2",
         "--no-progress", "--reward-workers", "1", "--device", "cpu", "--reward", "helpers:parity_reward"]
NO_MAX_BUDGET = [a for i, a in enumerate(SMALL) if "--max-budget" not in SMALL[max(i - 1, 0):i + 1]]  # not a dapo option
COUNTERS = ("steps", "rollouts", "allocations", "reward_failures", "reward_calls", "eval_reward_failures",
            "eval_reward_calls", "rollouts_trained", "completion_tokens", "prompts", "processes", "rollouts_per_step")


def hanging_reward(completion: str, answer: str) -> float:
    time.sleep(3)
    return 1.0


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


ROWS = [{"prompt": f"{k}+{k % 3}=", "answer": str(k + k % 3)} for k in range(24)]  # 16 train, 8 held-out


@pytest.fixture(scope="module")
def resumable_run(tiny_model_dir, tmp_path_factory):
    """A finished 2-step run on a 24-row file (16 train, 8 held-out), evaluated every step, checkpoints 1 and 2."""
    tmp = tmp_path_factory.mktemp("resumable")
    data = write_rows(tmp / "d.jsonl", ROWS)
    rc = main(["--model", str(tiny_model_dir), "--dataset", str(data), "--output-dir", str(tmp / "run"),
               "--eval-every", "1", *SMALL])
    assert rc == 0
    return tmp / "run"


def copy_run(src: Path, tmp_path: Path, **config) -> tuple[Path, Path]:
    """A copy of ``src`` reading its own copy of the data (so a test may change it), ``config`` set in its config.yaml."""
    import yaml

    run_dir, data = tmp_path / "run", write_rows(tmp_path / "d.jsonl", ROWS)
    shutil.copytree(src, run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    saved.update(dataset=str(data), output_dir=str(run_dir), **config)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    return run_dir, data


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (the lock file holds its last holder's pid)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


# --- 1. a run knows its data ----------------------------------------------------------------------------------


def _reorder_train(rows):
    return rows[:16][::-1] + rows[16:]


def _edit_answer(rows):
    return [{**r, "answer": "99"} if i == 3 else r for i, r in enumerate(rows)]


def _add_rows(rows):
    return rows + [{"prompt": f"{k}*2=", "answer": str(2 * k)} for k in range(2)]


def _shuffle(rows):
    rows = list(rows)
    random.Random(0).shuffle(rows)
    return rows


@pytest.mark.parametrize("change, words", [
    (_reorder_train, ["train: rows reordered (", "in another place"]),
    (_edit_answer, ["train: 1 answer(s) edited"]),
    (_add_rows, ["train: 2 row(s) added, 0 removed (16 -> 18 rows)", "held-out: 2 row(s) added, 2 removed (8 -> 8 rows)"]),
    (_shuffle, ["held-out: ", "row(s) added"]),
])
def test_1_resume_refuses_changed_data_and_says_what_changed(resumable_run, tmp_path, capsys, change, words):
    run_dir, data = copy_run(resumable_run, tmp_path)
    (run_dir / "summary.json").unlink()  # interrupted in its final evaluation
    write_rows(data, change(read_rows(data)))
    before = snapshot(run_dir)
    assert main(["--resume", "--output-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert "--allow-config-change" in err and snapshot(run_dir) == before


def test_1_changed_data_is_accepted_only_knowingly_and_old_runs_warn(resumable_run, tmp_path, capsys):
    run_dir, data = copy_run(resumable_run, tmp_path)
    (run_dir / "summary.json").unlink()
    (run_dir / "data_fingerprint.json").unlink()  # a run saved before fingerprints
    assert main(["--resume", "--output-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("records no fingerprint of its data") == 1 and (run_dir / "data_fingerprint.json").is_file()
    (run_dir / "summary.json").unlink()
    write_rows(data, _shuffle(read_rows(data)))
    assert main(["--resume", "--allow-config-change", "--output-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: --allow-config-change: resuming on changed data" in out and "held-out:" in out
    assert "measured again on the new held-out prompts" in out  # not the old set's before-RL accuracy
    assert main(["--resume", "--output-dir", str(run_dir), "--max-steps", "3"]) == 0  # the new data is now the run's


# --- 2. a refused config change changes nothing --------------------------------------------------------------


def test_2_a_refused_config_change_leaves_the_run_folder_byte_identical(resumable_run, tmp_path, capsys):
    run_dir, _ = copy_run(resumable_run, tmp_path)
    before = snapshot(run_dir)
    assert main(["--resume", "--output-dir", str(run_dir), "--max-steps", "3", "--allocator", "uniform",
                 "--allow-config-change"]) == 1
    assert "saved with another configuration" in capsys.readouterr().err
    assert snapshot(run_dir) == before
    assert main(["--resume", "--output-dir", str(run_dir), "--max-steps", "3"]) == 0  # the run continues as it was
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 3


# --- 3. a finished run is finished, however it stopped ----------------------------------------------------------


def test_3_resume_of_a_run_finished_at_max_generated_is_refused(resumable_run, tmp_path, capsys):
    run_dir, _ = copy_run(resumable_run, tmp_path, max_steps=5, max_generated=32)  # stopped by its rollouts
    assert load_state(run_dir / "checkpoint-2")["generated"] == 32
    before = snapshot(run_dir)
    assert main(["--resume", "--output-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "reached --max-generated 32" in err and "raise --max-generated" in err
    assert snapshot(run_dir) == before


# --- 4. held-out means held out ------------------------------------------------------------------------------


def test_4_held_out_prompts_that_are_train_prompts_are_refused(tmp_path, capsys):
    data = write_rows(tmp_path / "d.jsonl", ROWS)
    absent = str(tmp_path / "absent-model")
    assert main(["--dataset", str(data), "--eval-dataset", str(data), "--model", absent,
                 "--output-dir", str(tmp_path / "a"), *SMALL]) == 1
    assert "shares 8 of its 8 prompts with --dataset" in capsys.readouterr().err
    # the same normalisation as --dataset's de-duplication: runs of whitespace are one space
    held = write_rows(tmp_path / "h.jsonl", [{"prompt": " 0+0=  ", "answer": "0"}, {"prompt": "1+1=", "answer": "2"},
                                             {"prompt": "x=", "answer": "1"}, {"prompt": "y=", "answer": "2"}])
    assert main(["--dataset", str(data), "--eval-dataset", str(held), "--model", absent,
                 "--output-dir", str(tmp_path / "b"), *SMALL]) == 1
    assert "shares 2 of its 4 prompts" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- 6. counts survive a resume -------------------------------------------------------------------------------


def test_6_a_resumed_run_counts_like_the_uninterrupted_one(resumable_run, tmp_path):
    run_dir, _ = copy_run(resumable_run, tmp_path)
    done = json.loads((run_dir / "summary.json").read_text())
    # killed after checkpoint 1: no checkpoint 2, no summary, one metrics line
    shutil.rmtree(run_dir / "checkpoint-2")
    (run_dir / "summary.json").unlink()
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    assert main(["--resume", "--output-dir", str(run_dir)]) == 0
    again = json.loads((run_dir / "summary.json").read_text())
    assert {k: again[k] for k in COUNTERS} == {k: done[k] for k in COUNTERS}
    assert done["eval_reward_calls"] == 4 * 9 * 8  # before, each of 2 steps, after


# --- 7. damaged policy state is named and set aside ------------------------------------------------------------


def test_7_a_damaged_prompt_stream_state_is_set_aside(resumable_run, tmp_path):
    run_dir, _ = copy_run(resumable_run, tmp_path)
    path = run_dir / "checkpoint-2" / "cobarl_state.json"
    state = json.loads(path.read_text())
    for stream, words in [({"epoch": 0}, "lacks 'position', 'size'"),
                          ({"epoch": 0, "position": 99, "size": 16}, "position 99 is beyond its 16 prompts")]:
        state["allocator"]["stream"] = stream
        path.write_text(json.dumps(state))
        assert words in checkpoint_problem(run_dir / "checkpoint-2")
    said = []
    assert select_checkpoint(run_dir, log=said.append, set_aside=True).name == "checkpoint-1"
    assert "prompt stream" in said[0] and not (run_dir / "checkpoint-2").exists()
    with pytest.raises(ValueError, match="lacks 'position', 'size'"):
        PromptStream(range(4)).load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="position 9 is beyond its 4 prompts"):
        PromptStream(range(4)).load_state_dict({"epoch": 0, "position": 9, "size": 4})


# --- 8. --fresh in the run folder itself ------------------------------------------------------------------------


def test_8_fresh_from_inside_the_run_folder_is_refused_clearly(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("max_steps: 2\n")
    monkeypatch.chdir(run_dir)
    assert main(["--fresh", "--output-dir", ".", "--model", str(tmp_path / "absent"), "--train-size", "16", *SMALL]) == 1
    err = capsys.readouterr().err
    assert "empty name" not in err and "the folder you are in" in err and "cd .." in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"] and not list(tmp_path.glob("run.old-*"))


# --- 9. messages name what to change ---------------------------------------------------------------------------


def test_9_dapo_batch_larger_than_the_data_names_its_options(tmp_path, capsys):
    data = write_rows(tmp_path / "d.jsonl", ROWS)  # 16 train prompts; DAPO draws 3 x 8 = 24 per batch
    assert main(["--dataset", str(data), "--allocator", "dapo", "--model", str(tmp_path / "absent"),
                 "--output-dir", str(tmp_path / "run"), *NO_MAX_BUDGET, "--prompts-per-step", "8"]) == 1
    err = capsys.readouterr().err
    assert "--gen-batch-factor 3 x --prompts-per-step 8 = 24" in err and "16 training prompts" in err


def test_9_a_blank_answer_is_reported_as_blank(tmp_path):
    from cobarl.data.math import rows_to_problems

    with pytest.raises(ValueError, match=r"row 1: the ground truth is blank \('   '\)"):
        rows_to_problems([{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": "   "}])


def test_9_a_huge_reward_is_reported_as_returned():
    from cobarl.train.rewards import probe_verifier

    guarded = GuardedReward(lambda c, a: 1e300, timeout=None)
    assert guarded("x", "1") == 0.0 and guarded.failure_count == 1 and "1e+300" in guarded.last_failure
    with pytest.raises(ValueError, match=r"1e\+300"):
        probe_verifier(GuardedReward(lambda c, a: 1e300, timeout=None), ["1"])
    assert GuardedReward(lambda c, a: 3e38, timeout=None)("x", "1") == 3e38  # float32 holds it


def test_9_probe_refuses_an_infinite_min_ratio():
    from cobarl.experiments.comparison.probe import options_from_argv

    with pytest.raises(ValueError, match="--min-ratio"):
        options_from_argv(["--min-ratio", "inf"])


# --- 5. every front end probes the verifier ---------------------------------------------------------------------


def test_5_probe_refuses_a_hanging_verifier_before_any_model(tmp_path, capsys):
    from cobarl.experiments.comparison.probe import main as probe_main

    start = time.monotonic()
    rc = probe_main(["--reward", "test_faults_resume:hanging_reward", "--reward-timeout", "0.2", "--seeds", "2",
                     "--workers", "1", "--model", str(tmp_path / "absent"), "--output-dir", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and "failed when probed" in err and "timeout" in err
    assert time.monotonic() - start < 30


def picky_reward(completion: str, answer: str) -> float:
    """Scores the ground truth itself (so the start-up probe passes) and raises on anything else."""
    if completion != answer:
        raise ValueError("cannot parse")
    return 1.0


def test_5_eval_probes_the_verifier_and_stops_when_every_call_fails(tiny_model_dir, tmp_path, capsys):
    from cobarl.evaluate.cli import main as eval_main
    from helpers import DATA

    common = ["--benchmarks", str(DATA / "arith_sample.jsonl"), "--limit", "2", "--k", "2", "--max-tokens", "4",
              "--device", "cpu", "--no-progress", "-o", str(tmp_path / "r.json")]
    start = time.monotonic()
    assert eval_main([*common, "--reward", "test_faults_resume:hanging_reward", "--reward-timeout", "0.2",
                      "--model", str(tmp_path / "absent")]) == 2
    assert "failed when probed" in capsys.readouterr().err and time.monotonic() - start < 30
    assert eval_main([*common, "--reward", "test_faults_resume:picky_reward", "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert "every reward call failed on arith_sample" in err and "cannot parse" in err
    assert not (tmp_path / "r.json").exists()
