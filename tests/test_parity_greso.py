"""GRESO against its public code (Infini-AI-Lab/GRESO @ b277843), on vectors that code produced
(``tests/data/parity_greso.json``: the pre-rollout skip with its random draws, the p_easy/p_hard
controller, the adaptive sampling batch size), and the policy through ``run_step``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cobarl.policies import StrategyConfig
from cobarl.policies import GresoPolicy, PromptStream, make_policy, run_step
from cobarl.policies.greso import (
    SKIP_CODES,
    float32_ratio,
    next_sampling,
    pooled_ratios,
    skip_decision,
    update_probabilities,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "parity_greso.json").read_text())["instances"]
SKIP = [r for r in VECTORS if r["kind"] == "skip"]
CONTROLLER = [r for r in VECTORS if r["kind"] == "controller"]
BATCH_SIZE = [r for r in VECTORS if r["kind"] == "batch_size"]


def test_vectors_cover_every_part():
    assert len(SKIP) >= 80 and len(CONTROLLER) >= 70 and len(BATCH_SIZE) >= 40
    assert any(r["error"] for r in BATCH_SIZE)


@pytest.mark.parametrize("rec", SKIP, ids=lambda r: str(r["id"]))
def test_skip_decisions_and_draws_as_the_public_code(rec):
    draws = iter(rec["draws_in_order"])
    consumed: list[float] = []

    def draw() -> float:
        consumed.append(next(draws))
        return consumed[-1]

    codes = []
    for prompt in rec["prompts"]:
        before = len(consumed)
        got = skip_decision(prompt["history"], rec["p_easy"], rec["p_hard"], draw)
        assert consumed[before:] == prompt["draws"], prompt["data_id"]
        assert got.decision == prompt["decision"], prompt["data_id"]
        assert got.easy_prob == prompt["easy_skip_prob"] and got.hard_prob == prompt["hard_skip_prob"], prompt["data_id"]
        codes.append(SKIP_CODES[got.decision])
    assert consumed == rec["draws_in_order"] and next(draws, None) is None
    assert codes == rec["skip_log_codes"]
    assert [i for i, c in enumerate(codes) if c == SKIP_CODES["keep"]] == rec["kept"]


@pytest.mark.parametrize("rec", CONTROLLER, ids=lambda r: str(r["id"]))
def test_controller_as_the_public_code(rec):
    for rnd in rec["rounds"]:  # the per-round ratios are float32 count / groups
        assert float32_ratio(rnd["all_correct_groups"], rnd["groups"]) == rnd["all_correct_example_ratio"]
        assert float32_ratio(rnd["all_format_groups"], rnd["groups"]) == rnd["format_example_ratio"]
    easy, hard = pooled_ratios([(r["rows"], r["all_correct_example_ratio"], r["format_example_ratio"])
                                for r in rec["rounds"]])
    assert (easy, hard) == (rec["easy_data_ratio"], rec["hard_data_ratio"])
    if rec["dynamic_filtering_strategy"] != "all_probabilistic" or rec["epoch"] == 0:
        assert not rec["updated"]  # cobarl runs only the probabilistic strategy, and updates only after epoch 0
        assert (rec["new_p_easy"], rec["new_p_hard"]) == (rec["p_easy"], rec["p_hard"])
        return
    given = {k: rec[k] for k in ("target_zero_variance", "min_p", "max_p") if rec[k] is not None}
    got = update_probabilities(rec["p_easy"], rec["p_hard"], easy, hard, **given)
    assert got == (rec["new_p_easy"], rec["new_p_hard"])


@pytest.mark.parametrize("rec", BATCH_SIZE, ids=lambda r: str(r["id"]))
def test_sampling_batch_size_as_the_public_code(rec):
    def decide():
        return next_sampling(rec["accumulated_rows"], rec["real_train_batch_size_rows"], rec["n"],
                             rec["zero_variance_ratio"], rec["default_sampling_batch_size"],
                             last_sampling=rec["last_sampling_in"], full_sampling_bs=bool(rec["full_sampling_bs"]))

    if rec["error"] is not None:  # ZeroDivisionError in the public code: cobarl refuses
        with pytest.raises(ValueError, match="zero-variance ratio 1"):
            decide()
        return
    got = decide()
    assert got.train == (rec["branch"] == "train")
    assert (got.batch_size, got.last_sampling) == (rec["adaptive_sampling_bs"], rec["last_sampling_out"])
    assert got.estimate == rec["estimated_sampling_batch_size"] and got.train_rows == rec["train_rows"]


# --- the policy ---------------------------------------------------------------------------------------

N, PROMPTS, DATA = 4, 4, 24


def _rewards(pid: int, k: int) -> float:
    """Prompts 0-7 always right, 8-15 always wrong (hard: 0.1, a boxed wrong answer), the rest mixed."""
    return 1.0 if pid < 8 else 0.1 if pid < 16 else float((pid + k) % 2)


def _policy(**options) -> GresoPolicy:
    policy = make_policy(StrategyConfig(strategy="greso", min_sampling_batch=4, **options))
    policy.stream = PromptStream(range(DATA), seed=5)
    return policy


def _step(policy: GresoPolicy):
    generated: list = []

    def generate(rows):
        generated.append(list(rows))
        return np.asarray([_rewards(pid, k) for k, pid in enumerate(rows)])

    return run_step(policy, list(range(PROMPTS)), N * PROMPTS, generate), generated


def test_policy_skips_records_dropped_groups_and_trains_the_kept():
    policy = _policy()
    assert isinstance(policy, GresoPolicy) and policy.options.sampling_factor == 1.5
    first, rounds = _step(policy)
    assert len(rounds[0]) == 6 * N  # ceil(1.5 x 4) unseen prompts, all kept
    generated = set(first.group_ids)
    assert set(policy.history) == generated  # every generated group, dropped ones included
    assert any(pid < 16 for pid in generated)  # a zero-variance group was generated ...
    kept = [first.group_ids[g] for g in first.kept.rows.tolist()]
    assert len(kept) == N * PROMPTS and all(pid >= 16 for pid in kept)  # ... and dropped
    assert all(policy.history[pid] == [1.0] for pid in generated if pid < 8)
    assert all(policy.history[pid] == [pytest.approx(0.1)] for pid in generated if 8 <= pid < 16)
    assert first.prompts == len(generated)
    for _ in range(8):
        _step(policy)
    assert policy.skipped["skip_easy"] > 0 and policy.skipped["skip_hard"] > 0
    assert policy.p_easy != 0.5 or policy.p_hard != 0.5  # past the first epoch, the controller moved


def test_policy_state_round_trips_and_resumes_identically():
    policy = _policy()
    for _ in range(4):
        _step(policy)
    state = json.loads(json.dumps(policy.state_dict()))
    resumed = _policy()
    resumed.load_state_dict(state)
    assert resumed.history == policy.history and (resumed.p_easy, resumed.p_hard) == (policy.p_easy, policy.p_hard)
    for _ in range(3):
        a, rounds_a = _step(policy)
        b, rounds_b = _step(resumed)
        assert rounds_a == rounds_b and a.kept.rows.tolist() == b.kept.rows.tolist()
    assert resumed.state_dict() == policy.state_dict()


def test_policy_refuses_after_the_cap():
    policy = make_policy(StrategyConfig(strategy="greso", max_gen_batches=2))
    policy.stream = PromptStream(range(8, 1000))  # only all-wrong prompts

    with pytest.raises(RuntimeError, match="max_gen_batches"):
        run_step(policy, list(range(PROMPTS)), N * PROMPTS, lambda rows: np.zeros(len(rows)))
    # without a cap, a step that has drawn more prompts than the data hold stops instead of looping forever
    policy = make_policy(StrategyConfig(strategy="greso", max_gen_batches=0))
    policy.stream = PromptStream(range(8, 16))
    with pytest.raises(RuntimeError, match="more than the 8 of the data"):
        run_step(policy, list(range(PROMPTS)), N * PROMPTS, lambda rows: np.zeros(len(rows)))


def test_options_belong_to_greso():
    with pytest.raises(ValueError, match="p_easy is an option of greso"):
        StrategyConfig(strategy="dapo", greso_p_easy=0.3)
    config = StrategyConfig(strategy="greso", greso_p_hard=0.5)  # an old name still reads
    assert (config.target_zero_variance, config.min_p, config.max_p) == (0.25, 0.05, 0.95)
    assert (config.p_easy, config.p_hard, config.min_sampling_batch) == (0.5, 0.5, 64)
