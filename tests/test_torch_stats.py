"""DAPO and GRESO compute what their public code computes, in float32 as torch does: the group means and
stds in torch's own summation order (``cobarl.policies.torch_stats``, checked against torch itself), GRESO's
history and filter, DAPO's generation batches within one epoch, and the public GRPO advantage of the kept
groups, through ``run_step`` and in the simulator (the TRL trainer: ``tests/test_train_rounds.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import verl_grpo_advantages

from cobarl import metrics as M
from cobarl.advantages import baseline_advantages
from cobarl.experiments import SimConfig, SimOptions, simulate
from cobarl.policies import PromptStream, StrategyConfig, make_policy, run_step
from cobarl.policies.greso import greso_keeps_group, hard_streak
from cobarl.policies.stream import keeps_group
from cobarl.policies.torch_stats import grpo_baseline, torch_mean, torch_std
from cobarl.train.layout import StepLayout, check_strategy

EIGHT_011 = np.full(8, 0.11, dtype=np.float32)


def _groups(seed: int) -> list[np.ndarray]:
    """Every size 1..256, values on and next to GRESO's thresholds 0.11 and 0.98 (float32 neighbours too)."""
    rng = np.random.default_rng(seed)
    near = [np.float32(x) for x in (0.11, 0.98, 0.1, 0.0, 1.0)]
    near += [np.nextafter(x, np.float32(k)) for x in near[:2] for k in (0, 2)]
    out = []
    for n in range(1, 257):
        out.append(rng.choice(near, size=n).astype(np.float32))
        out.append((0.11 + (rng.random(n) - 0.5) * 0.02).astype(np.float32))
    return out


def test_means_and_stds_are_torchs_bit_for_bit():
    torch = pytest.importorskip("torch")
    for v in _groups(0):
        t = torch.from_numpy(v)
        assert torch_mean(v) == torch.mean(t).item(), v.size
        # GRESO's history: reward.view(-1, n).mean(-1), one row per group
        assert torch_mean(v) == torch.from_numpy(np.tile(v, (3, 1))).view(-1, v.size).mean(-1)[1].item()
        if v.size > 1:
            assert torch_std(v) == torch.std(t).item(), v.size
    for n in (1000, 4096, 5000):  # the cascade's levels
        v = np.random.default_rng(n).random(n).astype(np.float32)
        assert torch_mean(v) == torch.mean(torch.from_numpy(v)).item()


def test_numpys_float32_mean_is_not_torchs():
    """Eight rewards of 0.11: torch's mean is 0.11000000685 (above GRESO's hard threshold 0.11, no hard
    streak); numpy's float32 mean, cobarl's before, is 0.10999999940 (a hard visit)."""
    assert torch_mean(EIGHT_011) == 0.11000000685453415 > 0.11
    assert float(np.mean(EIGHT_011, dtype=np.float32)) == 0.10999999940395355
    assert grpo_baseline([0.5]) == (0.0, 1.0)


def test_greso_history_holds_torchs_group_means():
    policy = make_policy(StrategyConfig("greso", min_sampling_batch=2))
    policy.stream = PromptStream(range(6))

    def generate(rows):  # prompt 0 scores 0.11 every time, the others mixed
        return np.array([0.11 if pid == 0 else float(j % 2) for j, pid in enumerate(rows)])

    while 0 not in policy.history:
        run_step(policy, [0, 1], 16, generate)
    assert set(policy.history[0]) == {0.11000000685453415} and hard_streak(policy.history[0]) == 0


def test_greso_filter_is_max_against_min_of_the_float32_rewards():
    # three float64 0.1s have std 1.4e-17: DAPO's filter (on the acc metric, float64) keeps them, GRESO's drops them
    assert keeps_group(np.full(3, 0.1)) and not greso_keeps_group(np.full(3, 0.1))
    assert not greso_keeps_group(np.array([0.1, 0.1 + 1e-12]))  # one float32 value
    assert not greso_keeps_group(np.array([1.0])) and keeps_group(np.array([1.0]))  # a group of one
    assert greso_keeps_group(np.array([0.0, 1.0]))


def test_greso_refuses_one_rollout_per_prompt_before_any_model_loads():
    errors = check_strategy(StrategyConfig("greso"), StepLayout.derive(4, 4), train_prompts=16)
    assert errors and "at least 2 rollouts per prompt" in errors[0]


def test_dapo_generation_batches_never_span_two_epochs():
    """A drop_last dataloader: 10 prompts in batches of 6 give one batch per epoch, the 4 left dropped."""
    policy = make_policy(StrategyConfig("dapo", gen_batch_factor=3))
    policy.stream = PromptStream(range(10), seed=3)
    rounds: list[list] = []

    def generate(rows):  # the first batch has no mixed group: a second batch is drawn
        rounds.append(list(dict.fromkeys(rows)))
        return np.array([float(j % 2) if len(rounds) > 1 else 1.0 for j in range(len(rows))])

    run_step(policy, [0, 1], 8, generate)
    order = [PromptStream(range(10), seed=3) for _ in range(2)]
    order[1].epoch = 1
    assert rounds == [order[0]._order()[:6], order[1]._order()[:6]]
    assert (policy.stream.epoch, policy.stream.position) == (1, 6)


@pytest.mark.parametrize("strategy, n", [("dapo", 4), ("dapo", 1), ("greso", 4)])
def test_dapo_and_greso_train_the_public_grpo_advantage(strategy, n):
    """Through run_step, non-binary rewards, small data (a prompt kept twice in a step is two groups), a
    group of one (DAPO, n = 1: its raw reward): the kept rows' advantages are verl's, bit for bit."""
    pytest.importorskip("torch")
    extra = {"gen_batch_factor": 1} if strategy == "dapo" else {"min_sampling_batch": 2}
    policy = make_policy(StrategyConfig(strategy, max_gen_batches=50, **extra))
    policy.stream = PromptStream(range(6))
    rng = np.random.default_rng(1)

    def generate(rows):
        return rng.choice([0.0, 0.1, 0.11, 0.5, 1.0], size=len(rows), p=[0.75, 0.05, 0.05, 0.05, 0.1])

    twice = 0
    for _ in range(30):
        result = run_step(policy, [0, 1], 2 * n, generate)
        kept = result.kept
        keys = kept.group_keys(result.group_ids)
        rewards = result.rewards[kept.rows]
        ours = baseline_advantages(rewards, keys, kept.baselines, scale_by_std=kept.scale_by_std, float32=kept.float32)
        assert ours.tolist() == verl_grpo_advantages(rewards.tolist(), keys)
        twice += len({k[0] for k in keys}) < len(set(keys))
        if n == 1:
            assert np.array_equal(ours, (rewards.astype(np.float32) / np.float32(1 + 1e-6)).astype(np.float64))
    assert twice > 0 or n == 1  # the group keys mattered


def test_the_simulator_trains_dapo_groups_of_one_on_their_raw_reward():
    """With one rollout per prompt every DAPO group is a group of one: the public GRPO trains it on its raw
    reward (TRL's advantage, the simulator's before, gave it 0, so nothing was learnt)."""
    options = SimOptions(steps=4, prompts_per_step=8, rollouts_per_prompt=1,
                         sim=SimConfig(train_prompts=64, heldout_prompts=16, clusters=4))
    rows, summary = simulate(StrategyConfig("dapo"), 0, options)
    assert rows[-1][M.EVAL_HELDOUT_ACCURACY] > summary[M.SUMMARY_INITIAL_ACCURACY]
