"""AdaptiveGRPOTrainer with policies that generate in rounds or train on a subset (one process, tiny model).

The rows TRL trains on must be exactly the kept rows the policy chose, with the rewards they were
scored with when generated, and the advantages the policy's baselines give; the fair accounting
(generated, trained, rounds, prompts, tokens) must count what was really generated.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from helpers import verl_grpo_advantages  # noqa: E402
from test_train_trainer import make_trainer, small_config, toy_verifier  # noqa: E402

from cobarl.io import STATE_FILE  # noqa: E402
from cobarl.train.metrics_log import METRICS_FILE, read_metrics  # noqa: E402
from cobarl.train.trainer import AdaptiveGRPOTrainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class KeptRecorder:
    """Per step: the kept rows' completions as TRL received them, their rewards and the advantages."""

    def __init__(self, trainer: AdaptiveGRPOTrainer):
        self.steps: list[dict] = []
        kept_batch, inner = trainer._kept_batch, trainer._generate_in_rounds

        def recording_kept(kept_rows, log, local):
            inputs, generated, rpf = kept_batch(kept_rows, log, local)
            self.steps.append({"answers": [x["answer"] for x in inputs], "completions": list(generated[3]),
                               "rpf": rpf.tolist(), "generated": len(np.concatenate(log.rewards_per_func))})
            return inputs, generated, rpf

        def recording(inputs):
            out = inner(inputs)
            mask = out["completion_mask"].bool()
            self.steps[-1]["trained_ids"] = [ids[m].tolist() for ids, m in zip(out["completion_ids"], mask)]
            self.steps[-1]["advantages"] = out["advantages"].tolist()
            self.steps[-1]["batch_ids"] = list(trainer._batch_ids)
            return out

        trainer._kept_batch, trainer._generate_in_rounds = recording_kept, recording


@pytest.mark.parametrize("strategy", ["reinforce-ada", "reinforce-ada-pos", "dapo", "pods"])
def test_trained_rows_are_the_kept_rows_with_their_rewards(tmp_path, strategy):
    extra = {"round_size": 4, "max_rounds": 3} if strategy.startswith("reinforce") else {}
    config = small_config(tmp_path, allocator=strategy, train_size=16, **extra)
    trainer, _ = make_trainer(tmp_path, config)
    rec = KeptRecorder(trainer)
    trainer.train()
    tok = trainer.processing_class
    rows = read_metrics(Path(config.output_dir) / METRICS_FILE)
    assert len(rec.steps) == len(rows) == config.max_steps
    for step, row in zip(rec.steps, rows):
        assert len(step["completions"]) == config.rollouts_per_step == row["rollout/trained"]
        # The rewards TRL trains with are the verifier's scores of the completions it trains on.
        rescored = [toy_verifier(c, a) for c, a in zip(step["completions"], step["answers"])]
        assert [r[0] for r in step["rpf"]] == rescored
        decoded = tok.batch_decode(step["trained_ids"], skip_special_tokens=True)
        assert decoded == step["completions"]
        assert row["rollout/count"] == step["generated"] >= config.rollouts_per_step
        assert row["rollout/completion_tokens"] > 0
        if strategy.startswith("reinforce"):  # pool baseline: A = r - (pool pass rate), never divided by a std
            adv, r = np.asarray(step["advantages"]), np.asarray(rescored)
            for pid in set(step["batch_ids"]):
                idx = [i for i, p in enumerate(step["batch_ids"]) if p == pid]
                assert np.ptp(r[idx] - adv[idx]) < 1e-6  # one baseline per prompt
                assert 0 <= (r[idx] - adv[idx])[0] <= 1
        if strategy == "dapo":
            assert row["rollout/prompts"] >= config.prompts_per_step * 3 and row["rollout/effective_ratio"] == 1.0
            _assert_public_grpo(step, rescored, config)
        if strategy == "pods":
            assert row["rollout/count"] == 4 * config.rollouts_per_step and row["rollout/rounds"] == 1


def _assert_public_grpo(step: dict, rewards: list, config) -> None:
    """DAPO and GRESO train the public recipe's GRPO advantage (verl's, float32, eps 1e-6), each kept group
    (n consecutive rows) its own uid, not TRL's (eps 1e-4)."""
    n = config.rollouts_per_step // config.prompts_per_step
    assert step["advantages"] == verl_grpo_advantages(rewards, [k // n for k in range(len(rewards))])


def test_dapo_and_greso_warn_only_when_scale_rewards_is_not_their_group_scaling(tmp_path):
    for strategy, scale, warns in [("dapo", "group", False), ("greso", "none", True), ("reinforce-ada", "none", False)]:
        config = small_config(tmp_path, allocator=strategy, train_size=16, scale_rewards=scale)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make_trainer(tmp_path, config)
        said = [str(w.message) for w in caught if "does not apply" in str(w.message)]
        assert bool(said) == warns, (strategy, said)
        assert not said or "(r - mean) / (std + 1e-6)" in said[0]


def test_greso_trains_the_kept_rows_and_counts_the_generated_prompts(tmp_path):
    config = small_config(tmp_path, allocator="greso", train_size=16, max_steps=3, greso_min_sampling_batch=4)
    trainer, _ = make_trainer(tmp_path, config)
    rec = KeptRecorder(trainer)
    generated: list[set] = []
    inner = trainer._kept_batch

    def recording(kept_rows, log, local):
        generated.append(set(trainer.policy.last.group_ids))
        return inner(kept_rows, log, local)

    trainer._kept_batch = recording
    trainer.train()
    rows = read_metrics(Path(config.output_dir) / METRICS_FILE)
    assert len(rec.steps) == len(rows) == 3
    for step, row, prompts in zip(rec.steps, rows, generated):
        assert len(step["completions"]) == config.rollouts_per_step == row["rollout/trained"]
        assert [r[0] for r in step["rpf"]] == [toy_verifier(c, a) for c, a in zip(step["completions"], step["answers"])]
        assert row["rollout/count"] == step["generated"] >= config.rollouts_per_step
        assert row["rollout/prompts"] == len(prompts) >= 6  # the prompts generated (skipped ones are not)
        _assert_public_grpo(step, [r[0] for r in step["rpf"]], config)
    assert set(trainer.policy.history) == set().union(*generated)


def test_dapo_resume_draws_the_same_prompts(tmp_path):
    """The prompt stream is policy state: a run resumed from a checkpoint draws what the full run drew."""
    config = small_config(tmp_path, allocator="dapo", train_size=16, max_steps=3, save_steps=1, save_total_limit=10,
                          output_dir=str(tmp_path / "a"))
    full, _ = make_trainer(tmp_path / "a", config)
    full_rec = KeptRecorder(full)
    full.train()
    state = json.loads((tmp_path / "a" / "checkpoint-2" / STATE_FILE).read_text())["allocator"]
    assert state["stream"]["position"] > 0 or state["stream"]["epoch"] > 0
    resumed, _ = make_trainer(tmp_path / "b", config.replace(output_dir=str(tmp_path / "b")))
    res_rec = KeptRecorder(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    assert res_rec.steps[0]["batch_ids"] == full_rec.steps[2]["batch_ids"]
    assert res_rec.steps[0]["completions"] == full_rec.steps[2]["completions"]


def test_dapo_stops_with_the_public_message_when_nothing_varies(tmp_path):
    config = small_config(tmp_path, allocator="dapo", train_size=16, max_gen_batches=2)
    trainer, _ = make_trainer(tmp_path, config, verifier=lambda completion, answer: 1.0)
    with pytest.raises(RuntimeError, match="max_gen_batches"):
        trainer.train()


def test_reinforce_ada_refuses_non_binary_rewards_with_the_public_baseline(tmp_path):
    config = small_config(tmp_path, allocator="reinforce-ada", round_size=4)
    trainer, _ = make_trainer(tmp_path, config, verifier=lambda completion, answer: 0.5 * (len(completion) % 3))
    with pytest.raises(ValueError, match="pool_baseline='mean'"):
        trainer.train()


def test_max_generated_stops_the_run_and_sets_the_learning_rate(tmp_path):
    """With --max-generated, a policy that generates more per step stops after fewer steps, its learning rate
    decays in generated rollouts, and a plain allocator gets the usual linear schedule over its steps."""
    config = small_config(tmp_path, allocator="pods", max_steps=10, max_generated=150, save_steps=10,
                          output_dir=str(tmp_path / "pods"))
    trainer, _ = make_trainer(tmp_path / "pods", config)
    trainer.train()
    rows = read_metrics(Path(config.output_dir) / METRICS_FILE)
    assert len(rows) == 3 and [r["rollout/count"] for r in rows] == [64.0] * 3  # 64, 128, 192 >= 150
    assert rows[1]["learning_rate"] == pytest.approx(config.learning_rate * (1 - 64 / 150))
    ckpt = Path(config.output_dir) / "checkpoint-3"
    assert json.loads((ckpt / STATE_FILE).read_text())["generated"] == 192  # the stop saved a checkpoint
    from cobarl.train.checkpoints import run_finished

    assert run_finished(ckpt, 10, 150) and not run_finished(ckpt, 10, 200)
    plain = small_config(tmp_path, allocator="uniform", max_steps=4, max_generated=64, output_dir=str(tmp_path / "u"))
    trainer, _ = make_trainer(tmp_path / "u", plain)
    trainer.train()
    rows = read_metrics(Path(plain.output_dir) / METRICS_FILE)
    assert [r["learning_rate"] for r in rows] == pytest.approx([plain.learning_rate * (4 - k) / 4 for k in range(4)])


def test_a_prompt_drawn_twice_in_a_step_trains_as_two_groups():
    """DAPO's refill can draw a prompt again after the data's epoch ends (as the public trainer does): each
    draw is its own group, so its advantages are not normalised over both."""
    from cobarl.advantages import group_advantages
    from cobarl.policies import StrategyConfig
    from cobarl.policies import PromptStream, make_policy, run_step

    policy = make_policy(StrategyConfig(strategy="dapo", gen_batch_factor=3, max_gen_batches=50))
    policy.stream = PromptStream(range(10))
    rng = np.random.default_rng(0)

    def generate(rows):  # only prompts 3 and 7 ever have mixed rewards
        return np.where(np.isin(rows, [3, 7]), rng.integers(0, 2, len(rows)), 1).astype(float)

    twice = 0
    for _ in range(100):
        result = run_step(policy, [0, 1], 8, generate)
        keys = result.kept.group_keys(result.group_ids)
        pids = [result.group_ids[g] for g in result.kept.rows.tolist()]
        assert len(set(keys)) == 2 and all(keys.count(k) == 4 for k in set(keys))  # two groups of n = 4
        if len(set(pids)) == 1:  # the same prompt kept twice: still two groups
            twice += 1
            assert group_advantages(result.rewards[result.kept.rows], keys).num_groups == 2
    assert twice > 0


def test_dapo_without_a_cap_refuses_instead_of_looping_forever():
    from cobarl.policies import StrategyConfig
    from cobarl.policies import PromptStream, make_policy, run_step

    policy = make_policy(StrategyConfig(strategy="dapo", max_gen_batches=0))
    policy.stream = PromptStream(range(20))
    with pytest.raises(RuntimeError, match="more than the 20 of the data"):
        run_step(policy, [0, 1], 8, lambda rows: np.ones(len(rows)))


def test_max_generated_stops_at_the_end_of_a_generation(tmp_path):
    """With num_iterations=2 a generation trains two optimizer steps: the run stops after the second."""
    config = small_config(tmp_path, allocator="uniform", max_steps=10, max_generated=24, num_iterations=2,
                          save_steps=10)
    trainer, _ = make_trainer(tmp_path, config)
    trainer.train()
    assert trainer.state.global_step == 4 and trainer._generated_total == 32  # 16 per generation, 2 generations


def test_resume_check_accepts_a_policy_state_and_refuses_a_wrong_step(tmp_path):
    """A rollout policy's checkpoint state has no allocator statistics to count: `--resume` checks its step
    (it refused every policy checkpoint before, taking it for a wiped allocator state)."""
    from cobarl.policies import StrategyConfig
    from cobarl.policies import PromptStream, make_policy
    from cobarl.train.rundir import check_resume_state

    policy = make_policy(StrategyConfig(strategy="dapo"))
    policy.stream = PromptStream(range(16))
    ckpt = tmp_path / "checkpoint-6"
    ckpt.mkdir()
    config = small_config(tmp_path, allocator="dapo", train_size=16)
    for step in (6, 5):
        (ckpt / STATE_FILE).write_text(json.dumps({"global_step": step, "allocator": policy.state_dict()}))
        if step == 6:
            check_resume_state(ckpt, config)
        else:
            with pytest.raises(ValueError, match="written at step 5, not 6"):
                check_resume_state(ckpt, config)
