"""Every way a `cobarl train` run used to go silently wrong now ends in a clear message or an exact resume:
late validation, impossible multi-process layouts, run directories, damaged checkpoints, changed
options on resume, torn metrics lines, failing or hanging rewards."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from test_train_trainer import make_trainer, small_config  # noqa: E402

from cobarl.rewards import GuardedReward, load_reward  # noqa: E402
from cobarl.train.checkpoints import checkpoint_problem, last_complete_checkpoint, select_checkpoint  # noqa: E402
from cobarl.train.cli import config_from_args, main  # noqa: E402
from cobarl.train.config import make_config  # noqa: E402
from cobarl.train.config_files import dump_yaml  # noqa: E402
from cobarl.train.metrics_log import METRICS_FILE, read_metrics, truncate_metrics  # noqa: E402
from cobarl.train.rewards import BatchReward  # noqa: E402
from cobarl.train.run import run  # noqa: E402
from cobarl.train.rundir import (  # noqa: E402
    CONFIG_FILE,
    check_resume_config,
    check_resume_step,
    interrupt_hint,
    prepare_run_dir,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tiny matmuls: much faster single-threaded


# --- 7. every option validated before work, naming the field ------------------------------------------


@pytest.mark.parametrize("flags, field", [
    (["--kappa", "1"], "kappa"), (["--tau", "-3"], "tau"), (["--learning-rate", "-1"], "learning_rate"),
    (["--temperature", "0"], "temperature"), (["--reward-failure-limit", "0"], "reward_failure_limit"),
])
def test_bad_flag_values_are_refused_by_name(tmp_path, capsys, flags, field):
    out = tmp_path / "run"
    assert main([*flags, "--output-dir", str(out)]) == 2
    assert field in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("flag", ["--gamma", "--tau"])
def test_nan_flag_is_refused_by_argparse(capsys, flag):
    with pytest.raises(SystemExit):
        config_from_args([flag, "nan"])
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("max_steps: 3.5\n", "max_steps must be an integer"),
    ("prompts_per_step: '4'\n", "prompts_per_step must be an integer"),
    ("gamma: .nan\n", "gamma must be a finite number"),
    ("max_steps: [1\n", "not valid YAML"),
    ("kappa: 1\n", "kappa must be"),
    ("allocator: {strategy: coba, kapa: 3}\n", "unknown option(s) kapa"),
])
def test_bad_yaml_is_refused_by_name(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        config_from_args(["--config", str(path)])
    assert message in str(e.value)


def test_nested_yaml_and_renamed_kl_coefficient(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("allocator: {strategy: knapsack, kappa: 5}\nbeta: 0.04\n")
    c = config_from_args(["--config", str(path)])
    assert (c.strategy.name, c.strategy.kappa, c.kl_beta) == ("knapsack", 5.0, 0.04)
    assert config_from_args(["--beta", "0.1"]).kl_beta == 0.1  # deprecated alias


# --- 1. impossible process layouts refused with the numbers and the fix ---------------------------------


def test_layout_for_two_processes():
    c = make_config({"rollouts_per_step": 32, "prompts_per_step": 4})
    one, two = c.layout(1), c.layout(2)
    assert (one.micro_batch, one.accumulation, two.micro_batch, two.accumulation) == (32, 1, 16, 1)
    assert (two.per_process, two.rollouts_per_step, two.prompts_per_step) == (16, 32, 4)
    eight = c.replace(micro_batch_size=8).layout(2)
    assert (eight.micro_batch, eight.accumulation) == (8, 2)
    with pytest.raises(ValueError, match=r"multiple of micro batch x processes = 32 x 2 .* fit 2 process\(es\): 1, 2, 4, 8, 16"):
        c.replace(micro_batch_size=32).layout(2)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        make_config({"rollouts_per_step": 33, "prompts_per_step": 4}).layout(2)


def test_run_refuses_a_layout_before_loading_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = make_config({"rollouts_per_step": 16, "micro_batch_size": 16, "prompts_per_step": 4,
                          "model": str(tmp_path / "no-such-model"), "output_dir": str(tmp_path / "run")})
    with pytest.raises(ValueError, match="micro batch x processes"):
        run(config, log=lambda _: None)
    assert not (tmp_path / "run").exists()


# --- 5. run directories ----------------------------------------------------------------------------------


def _saved_run(tmp_path: Path, **options) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_yaml(make_config({"output_dir": str(run_dir), **options}), run_dir / CONFIG_FILE)
    return run_dir


def test_a_directory_holding_a_run_is_refused_or_moved_aside(tmp_path):
    run_dir = _saved_run(tmp_path)
    (run_dir / METRICS_FILE).write_text('{"step": 1}\n')
    config = make_config({"output_dir": str(run_dir)})
    with pytest.raises(FileExistsError, match="already holds a run.*--resume.*--fresh"):
        prepare_run_dir(config, run_dir, is_main=True, world=1, log=print)
    prepare_run_dir(config.replace(fresh=True), run_dir, is_main=True, world=1, log=print)
    assert not run_dir.exists() and (tmp_path / "run.old-1" / METRICS_FILE).is_file()


def test_interrupt_before_the_first_checkpoint_can_be_restarted(tmp_path):
    run_dir = _saved_run(tmp_path)
    (run_dir / METRICS_FILE).write_text('{"step": 1}\n')
    hint = interrupt_hint(run_dir)
    assert "No checkpoint was written yet" in hint and f"--resume --output-dir {run_dir}" in hint
    config = config_from_args(["--resume", "--output-dir", str(run_dir)])
    assert prepare_run_dir(config, run_dir, is_main=True, world=1, log=print) is None  # start over, no error
    truncate_metrics(run_dir / METRICS_FILE, 0)
    assert read_metrics(run_dir / METRICS_FILE) == []
    assert "Nothing was written" in interrupt_hint(tmp_path / "never-created")


def test_resume_refuses_changed_run_defining_options(tmp_path):
    run_dir = _saved_run(tmp_path, seed=0, prompts_per_step=16)
    changed = config_from_args(["--resume", "--output-dir", str(run_dir), "--seed", "1", "--allocator", "uniform",
                                "--window", "3", "--max-steps", "500"])
    with pytest.raises(ValueError) as e:
        check_resume_config(changed, run_dir)
    msg = str(e.value)
    assert "seed: 0 -> 1" in msg and "strategy: 'coba' -> 'uniform'" in msg and "window: 1 -> 3" in msg
    assert "max_steps" not in msg  # extending a run is what --resume is for
    check_resume_config(changed.replace(allow_config_change=True), run_dir)


def test_torn_metrics_line_loses_only_itself(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1}\n{"step": 2, "rew\n{"step": 3}\n{"step": 4}\n')
    assert [r["step"] for r in read_metrics(path)] == [1, 3, 4]
    truncate_metrics(path, 3)
    assert [r["step"] for r in read_metrics(path)] == [1, 3]


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    config = small_config(tmp, max_steps=2, save_steps=1, output_dir=str(tmp / "run"))
    trainer, _ = make_trainer(tmp, config)
    trainer.train()
    return tmp / "run"


def test_damaged_newest_checkpoint_falls_back_naming_the_file(checkpointed, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(checkpointed, run_dir)
    assert last_complete_checkpoint(run_dir).name == "checkpoint-2"
    weights = run_dir / "checkpoint-2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a kill during the save
    messages = []
    chosen = select_checkpoint(run_dir, log=messages.append, set_aside=True)
    assert chosen.name == "checkpoint-1"
    assert "model.safetensors is truncated" in messages[0]
    assert not (run_dir / "checkpoint-2").exists() and list(run_dir.glob("damaged-ckpt-2-*"))


def test_resume_past_max_steps_is_refused(checkpointed):
    # Killed after its last checkpoint but before the final evaluation: resuming would train one
    # step more than --max-steps.
    with pytest.raises(ValueError, match="checkpoint-2 already reached --max-steps 2"):
        check_resume_step(checkpointed / "checkpoint-2", 2)
    check_resume_step(checkpointed / "checkpoint-2", 3)


@pytest.mark.parametrize("name", ["optimizer.pt", "cobarl_state.json", "trainer_state.json", "rng_state.pth"])
def test_checkpoint_missing_a_file_is_not_resumable(checkpointed, tmp_path, name):
    ckpt = tmp_path / "checkpoint-1"
    shutil.copytree(checkpointed / "checkpoint-1", ckpt)
    assert checkpoint_problem(ckpt) is None
    (ckpt / name).unlink()
    assert f"{name} is missing" in checkpoint_problem(ckpt)


# --- 6. rewards that fail are loud -------------------------------------------------------------------


def test_reward_with_a_wrong_signature_is_refused_up_front():
    with pytest.raises(ValueError, match=r"cannot be called as f\(completion, answer\)"):
        load_reward(lambda completion: 1.0)


def test_hung_reward_times_out_and_is_counted():
    release = threading.Event()
    guarded = GuardedReward(lambda c, a: release.wait(), timeout=0.05)
    scores = BatchReward(guarded, workers=2)(None, ["a", "b", "c"], ["1", "2", "3"])
    release.set()
    assert scores == [0.0, 0.0, 0.0] and guarded.failure_count == 3 and "timeout" in guarded.last_failure


def test_rewards_are_scored_in_parallel():
    # Passes only if four calls are in flight at once; serial scoring would break the barrier.
    barrier = threading.Barrier(4, timeout=30)
    reward = BatchReward(lambda c, a: float(barrier.wait() >= 0), workers=4)
    assert reward(None, ["a"] * 4, ["a"] * 4) == [1.0] * 4 and reward.failure_count == 0


def test_reward_failing_on_every_call_aborts_the_run(tmp_path):
    def broken(completion, answer):
        raise KeyError("answer")

    trainer, _ = make_trainer(tmp_path, small_config(tmp_path, max_steps=2), verifier=broken)
    with pytest.raises(RuntimeError, match=r"failed on 16 of 16 calls.*KeyError"):
        trainer.train()
    assert not (tmp_path / "run" / METRICS_FILE).exists()


def test_partial_reward_failures_are_counted_per_step(tmp_path):
    def flaky(completion, answer):
        if len(completion) % 2:
            raise ValueError("cannot parse")
        return 1.0

    config = small_config(tmp_path, max_steps=2)
    trainer, rec = make_trainer(tmp_path, config, verifier=flaky)
    trainer.train()
    rows = read_metrics(Path(config.output_dir) / METRICS_FILE)
    expected = [sum(r == 0.0 for r in s["rewards"]) for s in rec.steps]
    assert [r["reward/failures"] for r in rows] == expected and sum(expected) > 0
    assert all(r["reward/failure_frac"] == f / 16 for r, f in zip(rows, expected))
