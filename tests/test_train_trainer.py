"""AdaptiveGRPOTrainer on a tiny random Qwen2 with the local character tokenizer (CPU, a few steps).

The reward is a deterministic function of the prompt and the sampled completion, so groups have
mixed outcomes from the first step and the allocation becomes non-uniform.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from cobarl import STRATEGIES, Allocator, StrategyConfig  # noqa: E402
from cobarl.models.tiny import build_model, build_tokenizer  # noqa: E402
from cobarl.train.checkpoints import last_complete_checkpoint  # noqa: E402
from cobarl.train.config import TrainConfig, make_config  # noqa: E402
from cobarl.train.data import embedded_datasets  # noqa: E402
from cobarl.tasks.embedded import get_task  # noqa: E402

# These tests were written against the arithmetic task (their toy verifiers read its answers).
V3_CHARS = get_task("arith-v3").chars
from cobarl.train.build import build_trainer  # noqa: E402
from cobarl.train.metrics_log import METRICS_FILE, make_callbacks, read_metrics  # noqa: E402
from cobarl.io import STATE_FILE  # noqa: E402
from cobarl.train.trainer import (  # noqa: E402
    AdaptiveGRPOConfig,
    AdaptiveGRPOTrainer,
    PromptBatchSampler,
    scalar_rewards,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tiny matmuls: much faster single-threaded


def toy_verifier(completion: str, answer: str) -> float:
    """1 when the completion's length has the answer's parity: mixed outcomes at any skill level."""
    return float(len(completion) % 2 == len(answer) % 2)


def small_config(tmp_path: Path, **overrides) -> TrainConfig:
    base = dict(
        output_dir=str(tmp_path / "run"), max_steps=3, save_steps=2, prompts_per_step=4, rollouts_per_step=16,
        max_completion_length=4, learning_rate=1e-2, train_size=8, eval_size=8, progress=False,
        device="cpu", seed=0,
    )
    strategy = overrides.get("strategy", overrides.get("allocator", "coba"))
    if not isinstance(strategy, str) or STRATEGIES[strategy].policy == "allocator":
        base["max_budget"] = 8  # an allocator's (the other policies have no max budget)
    base.update(overrides)
    return make_config(base)


class Recorder:
    """Wraps the trainer's generation hook to keep, per step, the plan, the rewards and the advantages."""

    def __init__(self, trainer: AdaptiveGRPOTrainer):
        self.steps: list[dict] = []
        inner = trainer._generate_and_score_completions

        def wrapped(inputs):
            out = inner(inputs)
            ids, counts = trainer._last_plan
            self.steps.append(
                {
                    "plan_ids": list(ids),
                    "counts": counts.tolist(),
                    "row_ids": list(trainer._batch_ids),
                    "rewards": scalar_rewards(trainer._rewards_per_func.double().cpu().numpy(),
                                              trainer.reward_weights.double().cpu().numpy()).tolist(),
                    "advantages": out["advantages"].tolist(),
                }
            )
            return out

        trainer._generate_and_score_completions = wrapped


def make_trainer(tmp_path: Path, config: TrainConfig | None = None, verifier=toy_verifier, **kw):
    config = config or small_config(tmp_path)
    tok = build_tokenizer(V3_CHARS)
    model = build_model(tok, seed=0)
    train_ds, _, _ = embedded_datasets(train_size=config.train_size, eval_size=config.eval_size, seed=0, task="arith-v3")
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(config, model, tok, train_ds, verifier, run_dir=run_dir, device="cpu",
                            callbacks=make_callbacks(run_dir, max_steps=config.max_steps, progress=False), **kw)
    return trainer, Recorder(trainer)


def reference_advantages(rewards, ids, eps=1e-4):
    """Plain loop: per group, (r - mean) / (unbiased std + eps); 0 for size-1 or all-equal groups."""
    out = [0.0] * len(rewards)
    for g in dict.fromkeys(ids):
        idx = [i for i, x in enumerate(ids) if x == g]
        r = [rewards[i] for i in idx]
        if len(r) < 2 or max(r) == min(r):
            continue
        mean = sum(r) / len(r)
        std = (sum((x - mean) ** 2 for x in r) / (len(r) - 1)) ** 0.5
        for i in idx:
            out[i] = (rewards[i] - mean) / (std + eps)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    trainer, rec = make_trainer(tmp)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    return trainer, rec, before, Path(trainer.args.output_dir)


def test_group_sizes_follow_allocation(trained):
    trainer, rec, _, _ = trained
    assert len(rec.steps) == 3
    for s in rec.steps:
        assert sum(s["counts"]) == 16 and len(s["plan_ids"]) == 4
        assert all(2 <= c <= 8 for c in s["counts"])
        # rollouts are laid out as each prompt repeated counts[i] times, in plan order
        assert Counter(s["row_ids"]) == dict(zip(s["plan_ids"], s["counts"]))
        assert s["row_ids"] == [pid for pid, c in zip(s["plan_ids"], s["counts"]) for _ in range(c)]
    assert any(len(set(s["counts"])) > 1 for s in rec.steps), "allocation never became non-uniform"


def test_advantages_match_reference_loop(trained):
    _, rec, _, _ = trained
    for s in rec.steps:
        ref = reference_advantages(s["rewards"], s["row_ids"])
        np.testing.assert_allclose(s["advantages"], ref, rtol=1e-5, atol=1e-6)
    assert any(any(a != 0 for a in s["advantages"]) for s in rec.steps)


def test_statistics_update_and_parameters_change(trained):
    trainer, rec, before, _ = trained
    seen = trainer.allocator.stats.seen([pid for s in rec.steps for pid in s["plan_ids"]])
    assert seen.all()
    _, _, attempts = __import__("cobarl").group_outcomes(rec.steps[-1]["row_ids"], np.array(rec.steps[-1]["rewards"]))
    assert attempts.tolist() == rec.steps[-1]["counts"]
    assert 0.0 < trainer.allocator.tracker.failure_rate < 1.0
    for name, p in trainer.model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), f"parameter {name} did not change"


def test_metrics_written(trained):
    _, _, _, run_dir = trained
    rows = read_metrics(run_dir / METRICS_FILE)
    assert [r["step"] for r in rows] == [1, 2, 3]
    needed = ["budget/min", "budget/max", "budget/mean", "budget/std", "budget/p50", "capability/alpha",
              "capability/beta", "capability/failure_rate", "rollout/effective_ratio", "reward/mean",
              "perf/step_s", "perf/rollouts_per_s", "perf/overhead_s", "perf/allocate_s"]
    for r in rows:
        missing = [k for k in needed if k not in r]
        assert not missing, missing
        assert r["budget/min"] >= 2 and r["budget/max"] <= 8
    # checkpoint-2 and the final checkpoint-3 both carry the allocator state
    for n in (2, 3):
        assert (run_dir / f"checkpoint-{n}" / STATE_FILE).is_file()
    assert last_complete_checkpoint(run_dir).name == "checkpoint-3"


@pytest.mark.parametrize("num_iterations, resume_at", [(1, 2), (2, 1), (2, 2)])
def test_resume_is_exact(tmp_path, num_iterations, resume_at):
    """A resumed run makes the same allocations and ends with the same allocator state as an uninterrupted
    one -- also from a checkpoint inside a generation (num_iterations=2, step 1)."""
    config = small_config(tmp_path, max_steps=4, save_steps=1, save_total_limit=10, num_iterations=num_iterations,
                          output_dir=str(tmp_path / "a"))
    full, rec_full = make_trainer(tmp_path / "a", config)
    full.train()
    ckpt = tmp_path / "a" / f"checkpoint-{resume_at}"
    assert json.loads((ckpt / STATE_FILE).read_text())["mid_generation"] == (resume_at % num_iterations != 0)

    resumed, rec_res = make_trainer(tmp_path / "b", config.replace(output_dir=str(tmp_path / "b")))
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == 4
    done = -(-resume_at // num_iterations)  # generations made before the checkpoint
    assert len(rec_full.steps) == 4 // num_iterations and len(rec_res.steps) == len(rec_full.steps) - done
    for a, b in zip(rec_full.steps[done:], rec_res.steps):
        assert (a["plan_ids"], a["counts"], a["rewards"]) == (b["plan_ids"], b["counts"], b["rewards"])
    assert json.dumps(resumed.allocator.state_dict(), sort_keys=True) == json.dumps(full.allocator.state_dict(), sort_keys=True)


def test_sampler_is_deterministic_and_distinct():
    s = PromptBatchSampler(10, 3, 7, repeat_count=2, seed=1)
    first = list(s)
    assert first == list(s)
    assert len(first) == len(s) == 3 * 7 * 2
    batch = first[:7]
    assert batch == first[7:14]  # repeated for steps_per_generation * num_iterations
    assert len(set(batch)) == 3
    s.set_epoch(1)
    assert list(s) != first


def test_callable_allocator(tmp_path):
    def lopsided(pass_rates, total_budget, min_budget, max_budget):
        counts = np.full(len(pass_rates), min_budget, dtype=np.int64)
        counts[0] += total_budget - counts.sum()
        return counts

    config = small_config(tmp_path, max_steps=1, max_budget=10)
    alloc = Allocator(StrategyConfig(strategy=lopsided, min_budget=2, max_budget=10))
    trainer, rec = make_trainer(tmp_path, config, allocator=alloc)
    trainer.train()
    assert rec.steps[0]["counts"] == [10, 2, 2, 2]


def test_config_refuses_unmeetable_budget(tmp_path):
    with pytest.raises(ValueError, match="total_budget=6 is below 4 prompts x min_budget=2"):
        AdaptiveGRPOConfig(output_dir=str(tmp_path), rollouts_per_step=6, prompts_per_step=4,
                           per_device_train_batch_size=6, use_cpu=True, report_to="none")


def test_unscorable_rollouts_get_zero_advantage_and_are_not_observed(tmp_path):
    config = small_config(tmp_path, max_steps=1)
    trainer, rec = make_trainer(tmp_path, config)
    # TRL semantics: a reward function returning None leaves the rollout unscored.
    trainer.reward_funcs[0] = lambda prompts, completions, prompt_id, **kw: [
        None if pid == prompt_id[0] else float(len(c) % 2) for pid, c in zip(prompt_id, completions)
    ]
    trainer.train()
    step = rec.steps[0]
    skipped = step["row_ids"][0]
    assert all(a == 0.0 for pid, a in zip(step["row_ids"], step["advantages"]) if pid == skipped)
    assert not trainer.allocator.stats.seen([skipped]).any()
    row = read_metrics(Path(config.output_dir) / METRICS_FILE)[0]
    assert row["reward/failures"] == step["row_ids"].count(skipped)


@pytest.mark.parametrize("aggregation, scale", [("sum_then_normalize", "group"), ("sum_then_normalize", "batch"),
                                                ("sum_then_normalize", "none"), ("normalize_then_sum", "group")])
def test_advantages_equal_trls_own_when_groups_are_uniform(tmp_path, monkeypatch, aggregation, scale):
    """With equal group sizes TRL's view(-1, G) grouping is right, so its advantages are the reference:
    two weighted reward functions, one leaving some rollouts unscored (None)."""
    from trl import GRPOTrainer

    seen = []
    inner = GRPOTrainer._generate_and_score_completions

    def record(self, inputs):
        out = inner(self, inputs)
        seen.append(out["advantages"].clone())
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", record)

    def parity(prompts, completions, **kw):
        return [float(len(c) % 2) for c in completions]

    def length_or_none(prompts, completions, prompt_id, **kw):
        return [None if i % 5 == 0 else float(len(c)) / 4 for i, c in enumerate(completions)]

    tok = build_tokenizer(V3_CHARS)
    args = AdaptiveGRPOConfig(
        output_dir=str(tmp_path), rollouts_per_step=16, prompts_per_step=4, num_generations=4,
        per_device_train_batch_size=16, max_steps=1, max_completion_length=4, use_cpu=True, report_to="none",
        strategy="uniform", strategy_options={"max_budget": 8}, reward_weights=[1.0, 0.5],
        multi_objective_aggregation=aggregation, scale_rewards=scale, save_strategy="no", disable_tqdm=True,
    )
    train_ds, _, _ = embedded_datasets(train_size=8, eval_size=4, seed=0, task="arith-v3")
    trainer = AdaptiveGRPOTrainer(model=build_model(tok, seed=0), reward_funcs=[parity, length_or_none], args=args,
                                  train_dataset=train_ds, processing_class=tok)
    rec = Recorder(trainer)
    trainer.train()
    assert rec.steps[0]["counts"] == [4, 4, 4, 4]
    ours = np.array(rec.steps[0]["advantages"])
    np.testing.assert_allclose(ours, seen[0].numpy(), rtol=1e-4, atol=1e-4)
    assert np.abs(ours).max() > 0
