"""Every cobarl rollout policy in verl's V1 trainer through the plugin, on REAL verl components on CPU
(a local Ray, TransferQueue, verl's trainers and agent-loop workers; fakes: the LLM server, the reward
worker and the actor update, see tests/verl_world.py), and one decision in two trainers.

The reward of rollout ``session`` of prompt ``index`` at ``step`` is a fixed draw
(:func:`verl_world.table_reward`), so each test feeds the same rewards to the same policy through the
TRL path (:func:`cobarl.policies.run_step` and the advantages `cobarl train` computes from its kept rows,
cobarl/train/rounds.py) and through verl (the plugin's rounds in the agent-loop workers, or its
trainer-side step; verl's own ``_compute_advantage``), and checks the same kept rows, baselines and
advantages. Precision: Reinforce-Ada's advantages are `cobarl.advantages.baseline_advantages` in float64
on both paths, stored by verl in float32 (equal to 1e-6); PODS and GRESO train with each trainer's own
GRPO of the kept rows, TRL's ``(r - mean) / (std + 1e-4)`` and verl's ``(r - mean) / (std + 1e-6)``
(float32), compared through the kept group's own statistics (equal to 1e-5).
"""

import json
from collections import Counter, defaultdict

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

import transfer_queue as tq  # noqa: E402
from verl_world import N_PROMPTS, make_config, make_trainer, quiet_tq, run_step, table_reward  # noqa: E402

from cobarl.integrations.verl_rounds import ERROR_TAG  # noqa: E402
from cobarl.integrations.verl_state import SUMMARY_FILE, get_state, reset_registry  # noqa: E402
from cobarl.io import load_state  # noqa: E402
from cobarl.advantages import baseline_advantages  # noqa: E402
from cobarl.policies import PromptStream, make_policy  # noqa: E402
from cobarl.policies import run_step as trl_run_step  # noqa: E402
from cobarl.train.grouping import TRL_EPS, trl_advantages  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end: real processes

VERL_EPS = 1e-6  # verl's compute_grpo_outcome_advantage: (r - mean) / (std + 1e-6)
# The example's CoBA settings are options of the allocator, which another policy refuses by name.
NO_COBA = [f"~trainer.v1.sampler.sampler_kwargs.{key}" for key in ("kappa", "window", "tau", "stats_window", "prior",
                                                                    "min_budget", "max_budget")]


@pytest.fixture(autouse=True)
def _fresh():
    reset_registry()
    quiet_tq()
    yield
    reset_registry()


def policy_config(world, ckpt, strategy, *overrides):
    return make_config(world, ckpt, *NO_COBA, f"trainer.v1.sampler.sampler_kwargs.strategy={strategy}",
                       "trainer.v1.sampler.sampler_kwargs.prompt_key=index", *overrides)


def capture_advantages(trainer) -> list:
    """Every training batch's real rows as verl's own ``_compute_advantage`` leaves them in TransferQueue."""
    captured, compute = [], trainer._compute_advantage

    def capture(batch, metrics):
        out = compute(batch, metrics)
        fields = ["advantages", "rm_scores", "index", "session_id", "global_steps", "uid"]
        data = tq.kv_batch_get(keys=out.keys, partition_id=out.partition_id, select_fields=fields)
        adv = data["advantages"].to_padded_tensor(0.0)[:, 0].double().numpy()
        reward = data["rm_scores"].to_padded_tensor(0.0).sum(-1).double().numpy()
        for j, (key, tag) in enumerate(zip(out.keys, out.tags)):
            if not tag.get("is_padding", False):
                captured.append(dict(key=key, tag=tag, adv=adv[j], reward=reward[j], index=int(data["index"][j]),
                                     session=int(data["session_id"][j]), step=int(data["global_steps"][j]),
                                     uid=str(data["uid"][j])))
        return out

    trainer._compute_advantage = capture
    return captured


def trl_path(policy, prompt_ids, step, n, per_prompt):
    """`cobarl train`'s step on the table's rewards: run_step, then the advantages of cobarl/train/rounds.py.
    Returns the result, the (prompt, session) of every generated row, and the kept rows' advantages."""
    seen, rows = Counter(), []

    def generate(ids):
        in_call, out = Counter(), []
        for pid in ids:
            session = seen[pid] if per_prompt else in_call[pid]  # a pool position, or a fresh group's session
            rows.append((pid, session))
            out.append(table_reward(pid, step, session))
            seen[pid] += 1
            in_call[pid] += 1
        return np.array(out)

    result = trl_run_step(policy, prompt_ids, len(prompt_ids) * n, generate)
    kept = result.kept
    rewards = result.rewards[kept.rows]
    if kept.baselines is not None:  # Reinforce-Ada's pool; DAPO's and GRESO's own groups, the public GRPO in float32
        adv = baseline_advantages(rewards, kept.group_keys(result.group_ids), kept.baselines,
                                  scale_by_std=kept.scale_by_std, float32=kept.float32)
    else:
        adv = trl_advantages(rewards[:, None], np.ones(1), kept.group_keys(result.group_ids), scale_rewards="group",
                             aggregation="sum_then_normalize")
    return result, rows, adv


def check_per_prompt_step(strategy, rows, n):
    """verl's rows (rounds in the workers) against the TRL path on the same prompts and rewards, step by step."""
    by_step = defaultdict(dict)
    for r in rows:
        by_step[r["step"]].setdefault(r["index"], []).append(r)
    for step, groups in by_step.items():
        result, generated, adv = trl_path(make_policy(strategy), sorted(groups), step, n, per_prompt=True)
        verl = {}
        for pid, members in groups.items():
            tag = members[0]["tag"]["cobarl"]
            assert tag["rewards"] == [table_reward(pid, step, s) for s in range(len(tag["rewards"]))]  # the pool
            verl.update({(pid, tag["kept"][r["session"]]): r for r in members})  # session j = j-th kept pool row
            if result.kept.baselines is not None:  # the pool baseline reached verl's estimator unchanged
                assert tuple(tag["baseline"][:2]) == result.kept.baselines[pid]
        compare_kept(verl, result, generated, adv, [r for members in groups.values() for r in members])


def compare_kept(verl: dict, result, generated: list, adv: np.ndarray, rows: list) -> None:
    """verl's kept rows ``{(prompt, session): row}`` = TRL's, with the same rewards and advantages (``rows``:
    every verl row of the step; a prompt GRESO draws twice in a step trains as two groups, of equal rewards)."""
    kept = result.kept.rows.tolist()
    trl = {generated[g]: (float(a), float(result.rewards[g])) for g, a in zip(kept, adv)}
    assert set(verl) == set(trl), "kept rows differ"
    for key, row in verl.items():
        assert row["reward"] == trl[key][1]
        if result.kept.baselines is not None:
            assert row["adv"] == pytest.approx(trl[key][0], abs=1e-6), key
        else:
            group = [r["reward"] for r in rows if r["uid"] == row["uid"]]
            check_grpo(row["adv"], trl[key][0], group)


def check_grpo(verl_adv: float, trl_adv: float, group: list) -> None:
    """The same row of the same kept group: verl's GRPO and TRL's differ only by their std epsilon."""
    std = float(np.std(group, ddof=1))
    assert verl_adv * (std + VERL_EPS) == pytest.approx(trl_adv * (std + TRL_EPS), abs=1e-5)


@pytest.mark.parametrize("strategy, overrides", [
    ("reinforce-ada", ["algorithm.adv_estimator=cobarl_pool_baseline", "algorithm.norm_adv_by_std_in_grpo=false"]),
    ("pods", ["+trainer.v1.sampler.sampler_kwargs.generate_size=8"]),
])
def test_per_prompt_policies_decide_in_verl_as_in_trl(verl_world, tmp_path, strategy, overrides):
    cfg = policy_config(verl_world, tmp_path / "ckpt", strategy, "trainer.total_training_steps=2", *overrides)
    trainer, _ = make_trainer(verl_world, cfg, reward="table")
    rows = capture_advantages(trainer)
    for step in (1, 2):
        _, metrics = run_step(trainer)
        assert metrics["rollout/count"] > metrics["rollout/trained"] == N_PROMPTS * 4  # generated > trained
        assert metrics["rollout/prompts"] == N_PROMPTS and metrics["rollout/completion_tokens"] > 0
        assert metrics["rollout/rounds"] >= 1 and "rollout/effective_ratio" in metrics and "budget/mean" in metrics
        assert ("rollout/unfinished" in metrics) == (strategy == "reinforce-ada")
    check_per_prompt_step(get_state("default").settings.strategy, rows, 4)
    summary = json.loads((tmp_path / "ckpt" / SUMMARY_FILE).read_text())
    assert summary["steps"] == 2 and summary["rollouts"] > summary["rollouts_trained"] == 2 * N_PROMPTS * 4
    # a policy error in a worker (rewards it refuses, a broken promise) reaches the prompt's tag: the run stops
    tq.kv_put(key="u-err", partition_id="train", tag={"is_prompt": True, "status": "failure", "global_steps": 3,
                                                        ERROR_TAG: "ValueError: rewards of 0 or 1 needed"})
    with pytest.raises(RuntimeError, match=f"{strategy} stopped: ValueError: rewards of 0 or 1"):
        trainer.replay_buffer.sample(global_steps=3, partition_id="train", batch_size=N_PROMPTS)


@pytest.mark.parametrize("mode", ["separate_async", "colocate_async"])
def test_reinforce_ada_pos_in_the_async_modes(verl_world, tmp_path, mode):
    extra = ["actor_rollout_ref.rollout.nnodes=1", "actor_rollout_ref.rollout.n_gpus_per_node=1",
             "actor_rollout_ref.rollout.checkpoint_engine.backend=nccl", "trainer.v1.separate_async.parameter_sync_step=2"]
    cfg = policy_config(verl_world, tmp_path / "ckpt", "reinforce-ada-pos", f"trainer.v1.trainer_mode={mode}",
                        "trainer.v1.sampler.custom_sampler.name=CobaReplayBufferAsync", "trainer.save_freq=-1",
                        "algorithm.adv_estimator=cobarl_pool_baseline", "algorithm.norm_adv_by_std_in_grpo=false", *(extra if mode == "separate_async" else []))
    trainer, _ = make_trainer(verl_world, cfg, reward="table")
    if mode == "separate_async":
        from verl.trainer.ppo.v1.trainer_separate_async import HybridEngineMode

        trainer.current_mode = HybridEngineMode.TRAINER
    trainer._add_async_warmup_batches(1)
    rows = capture_advantages(trainer)
    _, metrics = run_step(trainer)
    assert metrics["rollout/count"] > metrics["rollout/trained"] >= N_PROMPTS * 4
    check_per_prompt_step(get_state("default").settings.strategy, rows, 4)


def test_greso_decides_in_verl_as_in_trl_and_resumes(verl_world, tmp_path):
    """GRESO's step runs in the trainer process (sync): the same prompts drawn, skipped and kept as
    `cobarl train` on the same rewards, step after step; resumed from a checkpoint, the same again."""
    options = ["data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
               "+trainer.v1.sampler.sampler_kwargs.min_sampling_batch=2"]
    cfg = policy_config(verl_world, tmp_path / "ckpt", "greso", *options)
    trainer, _ = make_trainer(verl_world, cfg, reward="table")
    rows = capture_advantages(trainer)
    twin = make_policy(get_state("default").settings.strategy)
    twin.stream = PromptStream(range(N_PROMPTS), seed=0)
    states, kept, skipped = [], [], 0.0
    for step in (1, 2, 3):
        start = len(rows)
        _, metrics = run_step(trainer)
        result, generated, adv = trl_path(twin, ["a", "b"], step, 4, per_prompt=False)
        mine = rows[start:]
        assert get_state("default").policy.state_dict() == twin.state_dict()  # histories, p_easy/p_hard, stream
        compare_kept({(r["index"], r["session"]): r for r in mine}, result, generated, adv, mine)
        assert metrics["rollout/count"] == len(result.group_ids) > metrics["rollout/trained"] == 8
        assert metrics["rollout/rounds"] == result.rounds and metrics["rollout/skipped"] == twin.step_skipped
        states.append(twin.state_dict())
        kept.append(sorted(r["index"] for r in mine if r["session"] == 0))
        skipped += metrics["rollout/skipped"]
    assert skipped > 0 and sum(len(k) for k in kept) == 6  # skips happened once prompts had a history
    assert load_state(tmp_path / "ckpt" / "global_step_2")["policy"] == states[1]

    # resume from step 2 in a fresh registry: step 3 decides exactly as before
    reset_registry()
    quiet_tq()
    resumed = policy_config(verl_world, tmp_path / "ckpt", "greso", *options, "trainer.resume_mode=resume_path",
                            f"trainer.resume_from_path={tmp_path / 'ckpt' / 'global_step_2'}")
    trainer2, _ = make_trainer(verl_world, resumed, reward="table")
    assert trainer2.global_steps == 2
    rows2 = capture_advantages(trainer2)
    run_step(trainer2)
    assert get_state("default").policy.state_dict() == states[2]
    assert sorted(r["index"] for r in rows2 if r["session"] == 0) == kept[2]
