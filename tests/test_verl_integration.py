"""Start-up checks of cobarl.integrations.verl against the real verl 0.9 package, on CPU, without Ray.

verl's own trainer constructors (``PPOTrainerSync`` / ``PPOTrainerSeparateAsync.__init__``) build the
checkpoint callback and cobarl's replay buffer from the example config, which is where every
configuration cobarl cannot run correctly is refused. The end-to-end tests with Ray, TransferQueue and
agent-loop workers are in tests/test_verl_real.py; the GPU smoke test is marked ``gpu``.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl.trainer.ppo.v1 import get_trainer_cls  # noqa: E402

import numpy as np  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

import cobarl.integrations.verl as cv  # noqa: E402
from cobarl.advantages import baseline_advantages  # noqa: E402
from cobarl.integrations.verl_plan import POOL_ESTIMATOR  # noqa: E402
from cobarl.integrations.verl_rounds import CobaAgentLoopWorker, pool_baseline_advantage  # noqa: E402
from cobarl.integrations.verl_state import POOL_BASELINES  # noqa: E402
from cobarl.integrations.verl_state import get_state, reset_registry  # noqa: E402
from cobarl.io import STATE_FILE, save_state  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "verl"


@pytest.fixture(autouse=True)
def _fresh():
    reset_registry()
    yield
    reset_registry()


def make_config(tmp_path, *overrides, config_name="coba_dapo_qwen2.5_7b"):
    base = [
        "data.train_batch_size=8", "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "trainer.n_gpus_per_node=2", "trainer.nnodes=1", f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ] + (["trainer.v1.sampler.sampler_kwargs.max_budget=16"] if config_name == "coba_dapo_qwen2.5_7b" else [])
    with initialize_config_dir(config_dir=str(EXAMPLES), version_base=None):
        cfg = compose(config_name=config_name, overrides=base + list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def build(cfg):
    """verl's trainer __init__: build_checkpoint_callback + _build_replay_buffer (no workers, no Ray)."""
    return get_trainer_cls(cfg.trainer.v1.trainer_mode)(config=cfg)


def test_example_config_builds_cobarl_classes(tmp_path):
    trainer = build(make_config(tmp_path))
    assert isinstance(trainer.replay_buffer, cv.CobaReplayBuffer)
    assert isinstance(trainer.checkpoint_callback, cv.CobaCheckpointCallback)
    assert trainer.replay_buffer.cobarl is get_state("default") and trainer.replay_buffer.filter_groups_metric is None


@pytest.mark.parametrize("overrides, match", [
    (["actor_rollout_ref.rollout.n=1"], r"rollout.n=1 must lie in \[min_budget, max_budget\]"),
    (["actor_rollout_ref.rollout.n=32"], "must lie in"),
    (["trainer.v1.sampler.sampler_kwargs.min_budget=1"], "group of one"),
    (["algorithm.adv_estimator=cobarl_grpo"], "cobarl_grpo was removed"),
    (["reward.reward_model.enable=true"], "enable_resource_pool"),
    (["trainer.checkpoint_callback_class=null"], "checkpoint_callback_class must be"),
    (["actor_rollout_ref.rollout.agent.agent_loop_manager_class=null"], "agent_loop_manager_class must be"),
    (["trainer.v1.trainer_mode=colocate_async"], "must be CobaReplayBufferAsync for trainer_mode=colocate_async"),
    (["trainer.v1.sampler.custom_sampler.name=CobaReplayBufferAsync"], "must be CobaReplayBuffer for trainer_mode=sync"),
])
def test_startup_refuses_what_would_be_silently_wrong(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        build(make_config(tmp_path, *overrides))


def test_manager_refuses_legacy_trainer(tmp_path):
    with pytest.raises(ValueError, match="use_v1=true"):
        cv.CobaAgentLoopManager(config=make_config(tmp_path, "trainer.use_v1=false"), llm_client=None)


def test_dapo_filter_reaches_cobarl_buffer(tmp_path):
    trainer = build(make_config(tmp_path, "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc",
                                "algorithm.filter_groups.max_inflight_gen_batches=2"))
    buf = trainer.replay_buffer
    assert (buf.filter_groups_metric, buf.gen_batch_size, buf.max_inflight_gen_batches, buf.train_batch_size) == ("acc", 1, 2, 8)


# The example's CoBA settings: options of the allocator, which another policy refuses by name.
NO_COBA = [f"~trainer.v1.sampler.sampler_kwargs.{key}" for key in ("kappa", "window", "tau", "stats_window", "prior",
                                                                    "min_budget", "max_budget")]


def test_dapo_runs_as_verls_own_filter_with_uniform_budgets(tmp_path):
    with pytest.raises(ValueError, match="tau is an option of allocator, not of 'dapo'"):
        build(make_config(tmp_path, "trainer.v1.sampler.sampler_kwargs.strategy=dapo"))
    trainer = build(make_config(tmp_path, "trainer.v1.sampler.sampler_kwargs.strategy=dapo", *NO_COBA,
                                "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc"))
    assert trainer.replay_buffer.filter_groups_metric == "acc"
    plan = trainer.replay_buffer.cobarl.allocator.plan([1, 2, 3, 4], 32).counts
    assert plan.tolist() == [8, 8, 8, 8]
    with pytest.raises(ValueError, match="filter_groups.enable=true"):
        build(make_config(tmp_path, "trainer.v1.sampler.sampler_kwargs.strategy=dapo", *NO_COBA))


ASYNC = ["trainer.v1.sampler.custom_sampler.name=CobaReplayBufferAsync", "actor_rollout_ref.rollout.nnodes=1",
         "actor_rollout_ref.rollout.n_gpus_per_node=1", "actor_rollout_ref.rollout.checkpoint_engine.backend=nccl",
         "trainer.v1.separate_async.parameter_sync_step=2"]
POOL = "algorithm.adv_estimator=cobarl_pool_baseline"
NO_STD = "algorithm.norm_adv_by_std_in_grpo=false"  # Reinforce-Ada's scale_by_std (false) and verl's switch agree


def policy(strategy, *overrides):
    return ["trainer.v1.sampler.sampler_kwargs.strategy=" + strategy, *NO_COBA, *overrides]


@pytest.mark.parametrize("strategy, extra", [("reinforce-ada", [POOL, NO_STD]), ("reinforce-ada-pos", [POOL, NO_STD]), ("pods", []),
                                             ("greso", [])])
def test_every_policy_builds_where_it_runs(tmp_path, strategy, extra):
    """Each rollout policy starts in sync; the per-prompt ones (rounds in the workers) in both async modes too;
    the manager installs the rounds worker exactly for them."""
    modes = ["sync"] + (["colocate_async", "separate_async"] if strategy != "greso" else [])
    for mode in modes:
        reset_registry()
        overrides = policy(strategy, *extra, f"trainer.v1.trainer_mode={mode}", *(ASYNC if mode != "sync" else []))
        cfg = make_config(tmp_path, *overrides)
        build(cfg)
        manager = cv.CobaAgentLoopManager(config=cfg, llm_client=None)
        assert (manager.agent_loop_workers_class is CobaAgentLoopWorker) == (strategy != "greso"), mode


@pytest.mark.parametrize("overrides, match", [
    (policy("greso", "trainer.v1.trainer_mode=colocate_async", *ASYNC), "use trainer.v1.trainer_mode=sync"),
    (policy("greso", "trainer.v1.trainer_mode=separate_async", *ASYNC), "generate prompts ahead of the step"),
    (policy("reinforce-ada"), "set algorithm.adv_estimator=cobarl_pool_baseline"),
    (policy("pods", POOL), "use algorithm.adv_estimator=grpo"),
    (policy("reinforce-ada", POOL, NO_STD, "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc"),
     "filter_groups.enable=false"),
    (policy("reinforce-ada", POOL), "norm_adv_by_std_in_grpo=true but reinforce-ada's scale_by_std=false"),
    (policy("greso", "trainer.v1.sampler.sync_refill_failed_groups=true"), "sync_refill_failed_groups=false"),
    (policy("pods", "+trainer.v1.sampler.sampler_kwargs.generate_size=2"), "generate_size"),
    (policy("reinforce-ada", POOL, NO_STD, "+trainer.v1.sampler.sampler_kwargs.round_size=2"), "round_size"),
    (policy("pods", "actor_rollout_ref.rollout.n=1"), "group of one"),
    (policy("dapo", "+trainer.v1.sampler.sampler_kwargs.max_gen_batches=3"), "verl's own feature"),
])
def test_policies_refused_where_they_would_run_wrong(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        build(make_config(tmp_path, *overrides))


def test_a_policy_error_in_a_worker_is_not_a_session_failure():
    from cobarl.integrations.verl_rounds import PolicyError, _policy_call

    def refuse(_):
        raise ValueError("rewards of 0 or 1 needed")

    with pytest.raises(PolicyError, match="ValueError: rewards of 0 or 1 needed"):
        _policy_call(refuse, None)
    with pytest.raises(StopIteration):  # the step's end passes through
        _policy_call(next, iter(()))


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.yaml") if not p.stem.startswith("common_")))
def test_every_example_configuration_starts(tmp_path, name):
    """Each ready configuration in examples/verl composes and passes every start-up check of its strategy."""
    cfg = make_config(tmp_path, "actor_rollout_ref.actor.ppo_mini_batch_size=8", config_name=name)
    trainer = build(cfg)
    strategy = trainer.replay_buffer.cobarl_settings.strategy
    assert strategy.name == cfg.trainer.v1.sampler.sampler_kwargs.strategy and cfg.trainer.experiment_name == name
    assert strategy.name != "greso" or cfg.trainer.v1.trainer_mode == "sync"


def test_example_reward_is_verls_rule_read_as_0_or_1():
    from verl.utils.import_utils import load_extern_object

    reward = load_extern_object(module_path=str(EXAMPLES / "reward_01.py"), object_name="compute_score")
    right = reward("math_dapo", "so the answer is \\boxed{42}", "42")
    wrong = reward("math_dapo", "so the answer is \\boxed{41}", "42")
    assert (right["score"], right["acc"], wrong["score"], wrong["acc"]) == (1.0, 1.0, 0.0, 0.0)


def test_pool_baseline_estimator_is_registered_and_computes_trls_advantages():
    assert core_algos.get_adv_estimator_fn(POOL_ESTIMATOR) is pool_baseline_advantage  # registered on import
    rewards = torch.zeros(4, 3)
    rewards[:, 2] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    mask = torch.ones(4, 3)
    POOL_BASELINES.update({"u1": (0.25, 0.5, False), "u2": (0.7, 0.4, False)})
    adv, ret = pool_baseline_advantage(rewards, mask, index=np.array(["u1", "u1", "u2", "padabc"], dtype=object))
    want = baseline_advantages(np.array([1.0, 0.0, 1.0]), ["u1", "u1", "u2"], {"u1": (0.25, 0.5), "u2": (0.7, 0.4)})
    assert torch.equal(adv, ret) and adv[3].abs().sum() == 0  # verl's padding rows get nothing
    assert np.allclose(adv[:3, 0].numpy(), want, atol=1e-7) and torch.all(adv[:3] == adv[:3, :1])
    POOL_BASELINES["u3"] = (0.5, 0.5, True)
    with pytest.raises(ValueError, match="mixes"):
        pool_baseline_advantage(rewards[:2], mask[:2], index=np.array(["u1", "u3"], dtype=object))
    with pytest.raises(KeyError, match="no pool baseline"):
        pool_baseline_advantage(rewards[:1], mask[:1], index=np.array(["nobody"], dtype=object))


def test_buffer_outside_verl_trainer_is_refused(tmp_path):
    cfg = make_config(tmp_path)
    with pytest.raises(TypeError, match="_build_replay_buffer"):
        cv.CobaReplayBuffer(trainer_mode="sync", trainer_config=cfg.trainer.v1.sync, max_off_policy_threshold=8,
                            max_off_policy_strategy="drop", sampler_kwargs=cfg.trainer.v1.sampler.sampler_kwargs)


def test_resume_requires_state_or_explicit_fresh_start(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "global_step_4").mkdir(parents=True)
    (ckpt / "latest_checkpointed_iteration.txt").write_text("4")
    with pytest.raises(RuntimeError, match="has no cobarl_state.json"):
        build(make_config(tmp_path))
    reset_registry()
    fresh = build(make_config(tmp_path, "+trainer.v1.sampler.sampler_kwargs.missing_state=fresh"))
    assert fresh.replay_buffer.cobarl.restored_from == str(ckpt / "global_step_4") and fresh.replay_buffer.cobarl.steps == 0
    reset_registry()
    donor = cv.parse_settings({**OmegaConf.to_container(make_config(tmp_path).trainer.v1.sampler.sampler_kwargs)})
    state = cv.SharedState(donor)
    state.steps = 4
    save_state(ckpt / "global_step_4", state.state_dict(global_step=4))
    assert (ckpt / "global_step_4" / STATE_FILE).is_file()
    assert build(make_config(tmp_path)).replay_buffer.cobarl.steps == 4
    reset_registry()
    assert build(make_config(tmp_path, "trainer.resume_mode=disable")).replay_buffer.cobarl.restored_from is None


# on a GPU machine only ----------------------------------------------------------------------------------
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
