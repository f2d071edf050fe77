"""cobarl.integrations.verl against the real verl 0.9 package, on CPU, without Ray workers or GPUs.

Runs in the venv with the verl extra (``pip install -e '.[verl,test]'``); skipped elsewhere.
Ray and TransferQueue calls are replaced by in-memory fakes: the agent-loop manager is built with
``__init__`` (no ``create``, so no Ray workers) and ``ray.get`` returns its argument; the replay buffer
and the plugin talk to a dict-backed TransferQueue. The GPU end-to-end run is marked ``gpu``.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl.protocol import DataProto  # noqa: E402
from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.trainer.ppo.v1 import agent_loop_tq, replay_buffer  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402

import cobarl.integrations.verl as cv  # noqa: E402
from cobarl import group_outcomes  # noqa: E402
from cobarl.integrations.verl_plan import ROLLOUT_N_KEY, STATE_FILE, get_state, reset_registry  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "verl"


# fakes ------------------------------------------------------------------------------------------------
class FakeTQ:
    """The TransferQueue functions the replay buffer and the plugin call, backed by dicts."""

    def __init__(self):
        self.tags: dict[str, dict[str, dict]] = {}
        self.fields: dict[str, dict[str, dict]] = {}

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        for i, key in enumerate(keys):
            self.tags.setdefault(partition_id, {}).setdefault(key, {}).update(tags[i] if tags else {})
            if fields is not None:
                self.fields.setdefault(partition_id, {})[key] = {k: fields[k][i] for k in fields}

    def kv_list(self, partition_id=None):
        return {p: dict(v) for p, v in self.tags.items() if partition_id in (None, p)}

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        return {f: [self.fields[partition_id][k][f] for k in keys] for f in select_fields}

    def kv_clear(self, keys, partition_id):
        for key in [keys] if isinstance(keys, str) else keys:
            self.tags.get(partition_id, {}).pop(key, None)
            self.fields.get(partition_id, {}).pop(key, None)


class FakeWorker:
    """Stands in for the ``AgentLoopWorkerTQ`` Ray actor: unpacks rows and pops ``__rollout_n__`` as
    ``AgentLoopWorkerTQ.generate_sequences`` / ``_run_prompt`` do."""

    def __init__(self, default_n):
        self.default_n = default_n
        self.rows = []
        self.generate_sequences = self  # worker.generate_sequences.remote(chunk)

    def remote(self, chunk):
        for i in range(len(chunk)):
            prompt = {}
            for k, v in chunk.items():
                prompt[k] = v[i] if isinstance(v, torch.Tensor) else (v[i].data if v.shape else v.data)
            prompt["n"] = prompt.pop(ROLLOUT_N_KEY, self.default_n)
            self.rows.append(prompt)
        return None


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    reset_registry()
    fake = FakeTQ()
    monkeypatch.setattr(cv, "tq", fake)
    monkeypatch.setattr(replay_buffer, "tq", fake)
    monkeypatch.setattr(agent_loop_tq.ray, "get", lambda refs: refs)
    yield fake
    reset_registry()


def make_config(tmp_path, *overrides):
    """The example config (Qwen2.5-7B / DAPO) shrunk to a CPU-sized batch."""
    base = [
        "data.train_batch_size=8",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "trainer.n_gpus_per_node=2",
        "trainer.nnodes=1",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        "trainer.v1.sampler.sampler_kwargs.max_budget=16",
        "trainer.v1.sampler.sampler_kwargs.prompt_key=index",
    ]
    with initialize_config_dir(config_dir=str(EXAMPLES), version_base=None):
        cfg = compose(config_name="coba_dapo_qwen2.5_7b", overrides=base + list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def make_manager(cfg, workers=2):
    manager = cv.CobaAgentLoopManager(config=cfg, llm_client=None)
    manager.agent_loop_workers = [FakeWorker(int(cfg.actor_rollout_ref.rollout.n)) for _ in range(workers)]
    return manager


def make_batch(indices, step=1, validate=False):
    """A batch as ``PPOTrainer._next_train_batch`` builds it (dataloader dict -> TensorDict)."""
    n = len(indices)
    batch = tu.get_tensordict({
        "input_ids": torch.zeros(n, 4, dtype=torch.long),
        "raw_prompt": [[{"role": "user", "content": f"q{i}"}] for i in indices],
        "index": np.array(indices, dtype=object),
        "uid": np.array([f"uid{step}x{j}" for j in range(n)], dtype=object),
        "data_source": np.array(["math_dapo"] * n, dtype=object),
    })
    tu.assign_non_tensor_data(batch, "global_steps", step)
    if validate:
        tu.assign_non_tensor_data(batch, "validate", True)
    return batch


def dispatched(manager):
    return [row for w in manager.agent_loop_workers for row in w.rows]


def teach(state, rng, pass_rates):
    """Feed one round of rollouts per prompt id to the shared allocator."""
    for pid, p in pass_rates.items():
        state.inflight[f"teach{pid}"] = (pid, 8)
    uids = [f"teach{pid}" for pid in pass_rates for _ in range(8)]
    rewards = np.concatenate([(rng.uniform(size=8) < p).astype(float) for p in pass_rates.values()])
    state.observe(uids, rewards)


# 1. agent-loop manager -------------------------------------------------------------------------------
def test_manager_writes_rollout_n_with_exact_total_bounds_and_divisibility(tmp_path, _fresh):
    cfg = make_config(tmp_path)
    manager = make_manager(cfg)
    state = get_state("default")
    rng = np.random.default_rng(0)
    teach(state, rng, {i: p for i, p in enumerate(np.linspace(0.05, 0.95, 8))})
    batch = make_batch(list(range(8)))
    manager.generate_sequences(batch)
    assert ROLLOUT_N_KEY not in batch.keys()  # the caller's batch is not modified
    rows = dispatched(manager)
    n = [int(r["n"]) for r in rows]
    assert len(rows) == 8 and sum(n) == 8 * 4  # train_batch_size x rollout.n
    assert sum(n) % manager.cobarl_multiple == 0 and manager.cobarl_multiple == 16  # lcm(2 GPUs, 4 x 4)
    assert min(n) >= 2 and max(n) <= 16 and len(set(n)) > 1
    assert {r["uid"] for r in rows} == set(state.inflight) - {f"teach{i}" for i in range(8)}
    assert all(state.inflight[r["uid"]] == (int(r["index"]), int(r["n"])) for r in rows)
    assert all(len(w.rows) == 4 for w in manager.agent_loop_workers)  # verl's chunking still applies
    assert not _fresh.tags  # nothing dropped, nothing marked


def test_manager_drops_prompts_and_marks_them_finished(tmp_path, _fresh):
    cfg = make_config(tmp_path, "actor_rollout_ref.rollout.n=1", "actor_rollout_ref.actor.ppo_mini_batch_size=8")
    manager = make_manager(cfg)
    batch = make_batch(list(range(8)), step=3)
    manager.generate_sequences(batch)
    rows = dispatched(manager)
    assert len(rows) == 4 and sum(int(r["n"]) for r in rows) == 8 and all(int(r["n"]) == 2 for r in rows)
    dropped = set(batch["uid"]) - {r["uid"] for r in rows}
    assert len(dropped) == 4 and set(_fresh.tags["train"]) == dropped
    assert all(t["status"] == "finished" and t["is_prompt"] and t["global_steps"] == 3 for t in _fresh.tags["train"].values())


def test_manager_leaves_validation_batches_alone(tmp_path):
    manager = make_manager(make_config(tmp_path))
    manager.generate_sequences(make_batch([1, 2, 3, 4], validate=True))
    rows = dispatched(manager)
    assert len(rows) == 4 and all(r["n"] == 4 for r in rows)  # default n, no column written
    assert get_state("default").inflight == {}


def test_manager_rejects_indivisible_config_and_colocated_reward_model(tmp_path):
    with pytest.raises(ValueError, match="not divisible"):
        make_manager(make_config(tmp_path, "data.train_batch_size=6", "actor_rollout_ref.actor.ppo_mini_batch_size=6",
                                 "actor_rollout_ref.rollout.n=3", "trainer.n_gpus_per_node=4"))
    reset_registry()
    with pytest.raises(ValueError, match="enable_resource_pool"):
        make_manager(make_config(tmp_path, "reward.reward_model.enable=true"))


# 2. replay buffer -----------------------------------------------------------------------------------
def test_replay_buffer_updates_statistics_from_sampled_groups(tmp_path, _fresh):
    cfg = make_config(tmp_path)
    manager = make_manager(cfg)
    manager.generate_sequences(make_batch(list(range(8)), step=1))
    rows = dispatched(manager)
    rng = np.random.default_rng(3)
    truth = {}
    for row in rows:  # what AgentLoopWorkerTQ would write: a prompt tag plus one trajectory per session
        _fresh.kv_batch_put([row["uid"]], "train", tags=[{"is_prompt": True, "status": "finished", "global_steps": 1}])
        for s in range(int(row["n"])):
            r = float(rng.choice([-1.0, 1.0]))  # DAPO-style rewards
            truth.setdefault(int(row["index"]), []).append(r)
            scores = torch.zeros(5)
            scores[-1] = r
            key = f"{row['uid']}_{s}_0"
            _fresh.kv_batch_put([key], "train", fields={"rm_scores": [scores]},
                                tags=[{"status": "success", "seq_len": 9, "global_steps": 1}])
    buffer_cls = cv.CobaReplayBuffer
    sampler = cfg.trainer.v1.sampler
    buffer = buffer_cls(trainer_mode="sync", trainer_config=cfg.trainer.v1.sync, max_off_policy_threshold=8,
                        max_off_policy_strategy="drop", sampler_kwargs=sampler.sampler_kwargs, poll_interval=0.01)
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=8)
    assert len(batch.keys) == sum(int(r["n"]) for r in rows) == 32
    stats = get_state("default").allocator.stats
    ids, succ, att = group_outcomes(np.repeat(list(truth), [len(v) for v in truth.values()]),
                                    np.concatenate([truth[k] for k in truth]))
    assert stats.pass_rates(ids).tolist() == pytest.approx((succ / att).tolist())
    assert metrics["rollout/count"] == 32 and metrics["budget/total"] == 32 and metrics["rollout/unplanned"] == 0
    assert metrics["reward/mean"] == pytest.approx(np.mean(np.concatenate(list(truth.values()))))
    for key in ("capability/alpha", "capability/beta", "capability/failure_rate", "rollout/effective_ratio"):
        assert key in metrics
    assert get_state("default").inflight == {}
    # validation samples never touch the statistics
    before = stats.state_dict()
    _fresh.kv_batch_put(["v1"], "val", tags=[{"is_prompt": True, "status": "finished", "global_steps": 1}])
    _fresh.kv_batch_put(["v1_0_0"], "val", fields={"rm_scores": [torch.ones(2)]}, tags=[{"seq_len": 3}])
    buffer.sample(global_steps=1, partition_id="val", batch_size=1)
    assert stats.state_dict() == before


# 3. checkpoints ------------------------------------------------------------------------------------
def test_checkpoint_round_trip_through_callback_and_resume(tmp_path):
    cfg = make_config(tmp_path)
    manager = make_manager(cfg)
    state = get_state("default")
    rng = np.random.default_rng(5)
    teach(state, rng, {i: p for i, p in enumerate(rng.uniform(size=16))})
    manager.generate_sequences(make_batch(list(range(8, 16)), step=1))
    step_dir = tmp_path / "ckpt" / "global_step_1"
    cv.CobaCheckpointCallback(config=cfg).on_save(trainer=None, global_step=1, checkpoint_dir=str(step_dir))
    assert (step_dir / STATE_FILE).is_file()
    (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").write_text("1")
    expected = state.plan([f"z{i}" for i in range(8)], list(range(8)), 32).rollout_n.tolist()
    saved_inflight = dict(state.inflight)

    reset_registry()  # a restarted TaskRunnerV1 actor
    resumed = make_manager(cfg)
    assert resumed.cobarl.restored_from == str(step_dir)
    assert resumed.cobarl.plan([f"z{i}" for i in range(8)], list(range(8)), 32).rollout_n.tolist() == expected
    assert set(saved_inflight) <= set(resumed.cobarl.inflight) | {f"z{i}" for i in range(8)}

    reset_registry()
    fresh = make_manager(make_config(tmp_path, "trainer.resume_mode=disable"))
    assert fresh.cobarl.restored_from is None and fresh.cobarl.allocator.stats.state_dict()["history"] == []


# 4. advantage ---------------------------------------------------------------------------------------
def reference_advantages(scores, index, eps=1e-6, norm=True):
    groups = {}
    for s, g in zip(scores, index):
        groups.setdefault(g, []).append(s)
    out = []
    for s, g in zip(scores, index):
        vals = groups[g]
        if len(vals) < 2 or len(set(vals)) == 1:
            out.append(0.0)
            continue
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        out.append((s - mean) / (std + eps) if norm else s - mean)
    return np.array(out)


@pytest.mark.parametrize("norm", [True, False])
def test_registered_advantage_on_variable_groups(norm):
    fn = core_algos.get_adv_estimator_fn(cv.ADV_ESTIMATOR)
    assert fn is cv.compute_cobarl_grpo_advantage
    rng = np.random.default_rng(7)
    sizes = [1, 2, 5, 16, 3, 1, 40, 7]
    index = np.array([f"u{g}" for g, n in enumerate(sizes) for _ in range(n)], dtype=object)[rng.permutation(sum(sizes))]
    scores = rng.choice([0.0, 1.0], size=index.size)
    scores[index == "u4"] = 1.0  # an all-equal group
    length = 6
    mask = (torch.arange(length)[None, :] < torch.from_numpy(rng.integers(1, length + 1, index.size))[:, None]).float()
    token_rewards = torch.zeros(index.size, length)
    token_rewards[torch.arange(index.size), mask.sum(1).long() - 1] = torch.from_numpy(scores).float()

    data = DataProto.from_dict(tensors={"token_level_rewards": token_rewards, "response_mask": mask},
                               non_tensors={"uid": index})
    out = compute_advantage(data, adv_estimator=cv.ADV_ESTIMATOR, config=AlgoConfig(norm_adv_by_std_in_grpo=norm))
    adv = out.batch["advantages"]
    ref = reference_advantages(scores.tolist(), index.tolist(), norm=norm)
    assert torch.allclose(adv, torch.from_numpy(ref).float()[:, None] * mask, atol=1e-5)
    assert torch.equal(out.batch["returns"], adv)
    singles = np.isin(index, ["u0", "u5", "u4"])
    assert adv[torch.from_numpy(singles)].abs().sum() == 0
    if norm:  # on groups of two or more, verl's own GRPO agrees
        verl_adv, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, index)
        multi = torch.from_numpy(~np.isin(index, ["u0", "u5"]))
        assert torch.allclose(verl_adv[multi], adv[multi], atol=1e-5)
        assert not torch.allclose(verl_adv[~multi], adv[~multi])  # verl keeps a singleton's raw reward


# 5. on a GPU machine only ----------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not shutil.which("ray"), reason="needs CUDA GPUs and Ray")
@pytest.mark.skipif(not os.environ.get("COBARL_VERL_E2E_MODEL"), reason="set COBARL_VERL_E2E_MODEL and the data env vars")
def test_example_two_steps_on_gpus(tmp_path):
    """Two training steps of the example with a small model (see docs/verl.md, "GPU smoke test")."""
    gpus = torch.cuda.device_count()
    cmd = [
        "bash", str(EXAMPLES / "run_coba_dapo_qwen2.5_7b.sh"),
        "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.val_kwargs.n=1",
        "data.max_response_length=256", "trainer.total_training_steps=2", "trainer.save_freq=2",
        "trainer.test_freq=-1", "trainer.val_before_train=false", "trainer.logger=[console]",
        f"trainer.default_local_dir={tmp_path}", "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
    ]
    env = dict(os.environ, MODEL_PATH=os.environ["COBARL_VERL_E2E_MODEL"], GPUS_PER_NODE=str(gpus), ROLLOUT_TP="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "budget/mean" in proc.stdout and (tmp_path / "global_step_2" / STATE_FILE).is_file()
