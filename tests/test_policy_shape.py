"""The policy side's shape (issue 26): a policy owns its options, the protocol keeps its own promises
in every runner, old run files still load, and adding a policy is one module."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from cobarl.experiments.simulation.simulator import SimConfig, SimOptions, simulate
from cobarl.policies import POLICIES, ProtocolError, PromptStream, StrategyConfig, make_policy, run_step
from cobarl.strategies import STRATEGIES
from cobarl.train.config import make_config
from cobarl.train.config_files import load_yaml

OLD = Path(__file__).parent / "data" / "old_runs"  # written by cobarl at 23bc5da (every policy's options in one bag)


# --- a policy owns its options ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_saved_config_holds_only_the_chosen_policys_options(strategy):
    config = StrategyConfig(strategy)
    own = set(config.policy.Options.__dataclass_fields__)
    assert set(config.to_dict()) - {"strategy"} <= own
    for name, cls in POLICIES.items():  # no option another policy owns alone
        if cls is not config.policy:
            assert not (set(config.to_dict()) & (set(cls.Options.__dataclass_fields__) - own)), name


def test_dapo_records_no_allocator_option():
    assert make_config({"strategy": "dapo"}).to_dict()["strategy"] == {"name": "dapo", "gen_batch_factor": 3,
                                                                      "max_gen_batches": 10}


@pytest.mark.parametrize("strategy", ["dapo", "greso", "coba"])
def test_an_old_config_yaml_and_checkpoint_state_still_load(strategy):
    """A run written before a policy owned its options resumes: the same options, nothing foreign kept."""
    old = load_yaml(OLD / strategy / "config.yaml")
    config = make_config({k: v for k, v in old.items() if k not in ("output_dir",)})
    assert config.strategy == make_config({"strategy": strategy, "train_size": 64, "max_steps": 2, "save_steps": 2,
                                           "task": "families-v4"}).strategy
    state = json.loads((OLD / strategy / "cobarl_state.json").read_text())["allocator"]
    policy = make_policy(config.strategy_config())
    if policy.selects_prompts:
        policy.stream = PromptStream(range(64), seed=0)
    policy.load_state_dict(state)  # refuses any difference, so this is the whole check
    changed = make_policy(config.strategy_config().replace(**({"kappa": 7} if strategy == "coba" else
                                                              {"max_gen_batches": 3})))
    changed.stream = policy.stream
    with pytest.raises(ValueError, match="saved with another configuration"):
        changed.load_state_dict(state)


def test_old_option_names_read_everywhere():
    assert StrategyConfig("greso", greso_p_easy=0.3).p_easy == 0.3
    assert StrategyConfig("gvm", gvm_alpha=0.01).to_dict()["weight_alpha"] == 0.01
    assert make_config({"strategy": "greso", "greso_max_gen_batches": 3}).strategy.max_gen_batches == 3
    from cobarl.train.cli import config_from_args

    assert config_from_args(["--allocator", "gvm", "--gvm-beta", "3"]).strategy.weight_beta == 3.0
    with pytest.raises(ValueError, match="the same option is set twice"):
        from cobarl.train.config_files import check_one_name_per_option

        check_one_name_per_option({"greso_p_easy": 0.3, "p_easy": 0.4})


# --- the protocol keeps its own promises, in every runner ---------------------------------------------------


class _Greedy(type(make_policy("pods"))):
    """PODS that keeps one row too many: a broken policy."""

    def finish(self):
        kept = super().finish()
        return type(kept)(np.append(kept.rows, [kept.rows[0] ^ 1]), kept.baselines)


def test_run_step_refuses_a_policy_that_keeps_the_wrong_number_of_rows():
    policy = _Greedy(StrategyConfig("pods"))
    with pytest.raises(ProtocolError, match=r"kept 17 rows; a step trains exactly total_budget = 16"):
        run_step(policy, [0, 1, 2, 3], 16, lambda rows: np.arange(len(rows)) % 2.0)


def test_the_simulator_refuses_it_alike(monkeypatch):
    monkeypatch.setitem(POLICIES._items, "pods", _Greedy)
    with pytest.raises(ProtocolError, match="a step trains exactly total_budget"):
        simulate(StrategyConfig("pods"), 0, SimOptions(steps=1, prompts_per_step=4, rollouts_per_prompt=4,
                                                       sim=SimConfig(train_prompts=16, heldout_prompts=8)))


@pytest.mark.parametrize("broken, message", [
    (lambda kept: type(kept)(np.array([0, 0, 1, 2])), "a row twice"),
    (lambda kept: type(kept)(np.array([0, 1, 2, 99])), "rows outside the 4 it generated"),
    (lambda kept: type(kept)(kept.rows, baselines={}), "every kept group needs a finite"),
    (lambda kept: type(kept)(kept.rows, baselines={0: (0.5, -1.0), 1: (0.5, 0.5)}), "group 0 with baseline"),
    (lambda kept: type(kept)(kept.rows, scale_by_std=True), "without baselines"),
    (lambda kept: type(kept)(kept.rows, float32=True), "without baselines"),
    # labelled groups: baselines are keyed (prompt id, label), not by prompt id
    (lambda kept: type(kept)(kept.rows, baselines={0: (0.5, 0.5), 1: (0.5, 0.5)}, groups=np.array([0, 0, 1, 1])),
     r"group \(0, 0\) with baseline None"),
])
def test_run_step_checks_rows_and_baselines(broken, message):
    class Broken(type(make_policy("uniform"))):
        def finish(self):
            return broken(super().finish())

    with pytest.raises(ProtocolError, match=message):
        run_step(Broken(StrategyConfig("uniform")), [0, 1], 4, lambda rows: np.ones(len(rows)))


def test_trainers_read_what_a_policy_needs_from_its_class():
    ada, dapo, coba = POLICIES["reinforce-ada"], POLICIES["dapo"], POLICIES["allocator"]
    assert ada.own_baselines and dapo.own_baselines and dapo.selects_prompts and coba.single_pass
    assert (ada.baseline_scale, dapo.baseline_scale, POLICIES["greso"].baseline_scale) == ("none", "group", "group")
    assert dapo.verl_native and ada.decides == "between generation rounds"
    assert ada.per_prompt and POLICIES["pods"].per_prompt and not (dapo.per_prompt or POLICIES["greso"].per_prompt)


# --- adding a policy is one module ------------------------------------------------------------------------

THROWAWAY = '''
"""Train only the groups of the top-variance half of the prompts (a policy added from the docs alone)."""

from dataclasses import dataclass

import numpy as np

from cobarl.options import OptionSet, option
from cobarl.policies import Kept, RolloutPolicy, register_policy
from cobarl.strategies import register_strategy


@dataclass(frozen=True)
class TopHalfOptions(OptionSet):
    oversample: int = option(2, "Prompts generated per prompt trained.", ge=1)


@register_policy("top-half")
class TopHalfPolicy(RolloutPolicy):
    Options = TopHalfOptions
    selects_prompts = True

    def begin(self, prompt_ids, total_budget):
        self.n, self.want = total_budget // len(prompt_ids), len(prompt_ids)
        return {pid: self.n for pid in self.stream.take(self.options.oversample * self.want)}

    def after_round(self, ids, rewards):
        self.ids, self.rewards = ids, np.nan_to_num(rewards)
        return {}

    def finish(self):
        groups = {}
        for j, pid in enumerate(self.ids):
            groups.setdefault(pid, []).append(j)
        best = sorted(groups, key=lambda p: -np.var(self.rewards[groups[p]]))[: self.want]
        return Kept(np.asarray([j for p in best for j in groups[p]], dtype=np.int64))


register_strategy("top-half", "top-half", "train the top-variance half of the generated groups")
'''


@pytest.fixture
def throwaway(tmp_path, monkeypatch):
    """A one-module policy, registered for this test only."""
    monkeypatch.setattr(POLICIES, "_items", dict(POLICIES._items))
    monkeypatch.setattr(STRATEGIES, "_items", dict(STRATEGIES._items))
    (tmp_path / "top_half.py").write_text(textwrap.dedent(THROWAWAY))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    monkeypatch.delitem(__import__("sys").modules, "top_half", raising=False)
    return importlib.import_module("top_half")


def test_a_one_module_policy_runs_in_train_and_compare_with_its_flag(throwaway, tmp_path):
    from cobarl.experiments.comparison.cli import main as compare_main
    from cobarl.train.cli import main as train_main

    assert train_main(["--strategy", "top-half", "--oversample", "3", "--max-steps", "2", "--save-steps", "2",
                       "--train-size", "64", "--eval-size", "8", "--no-progress", "--device", "cpu",
                       "--output-dir", str(tmp_path / "train")]) == 0
    saved = yaml.safe_load((tmp_path / "train" / "config.yaml").read_text())["strategy"]
    assert saved == {"name": "top-half", "oversample": 3}
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    assert summary["rollouts"] == 3 * summary["rollouts_trained"]  # it generated for 3x the prompts it trained
    assert compare_main(["--strategies", "uniform,top-half:oversample=2", "--seeds", "1", "--steps", "3",
                         "--prompts-per-step", "8", "--rollouts-per-prompt", "4", "--train-prompts", "64",
                         "--heldout-prompts", "16", "--no-plots", "--no-progress",
                         "--output-dir", str(tmp_path / "compare")]) == 0
    report = json.loads((tmp_path / "compare" / "summary.json").read_text())
    assert report["strategies"]["top-half:oversample=2"]["allocator_config"] == {"strategy": "top-half", "oversample": 2}
    with pytest.raises(ValueError, match="oversample is an option of top-half, not of 'coba'"):
        make_config({"strategy": "coba", "oversample": 2})


def test_strategy_flag_and_its_old_name_run_reinforce_ada(tmp_path):
    from cobarl.train.cli import config_from_args, main

    assert config_from_args(["--allocator", "reinforce-ada"]) == config_from_args(["--strategy", "reinforce-ada"])
    assert main(["--strategy", "reinforce-ada", "--max-steps", "1", "--save-steps", "1", "--train-size", "32",
                 "--eval-size", "8", "--no-progress", "--device", "cpu", "--output-dir", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["strategy"] == "reinforce-ada" and summary["rollouts"] > summary["rollouts_trained"] == 128


def test_an_old_comparisons_stored_runs_are_reused(tmp_path):
    """Runs a comparison stored before options were a policy's own (23bc5da, every policy's options under
    ``allocator.*``) are reused by the same command, and refused under another setting."""
    import shutil

    from cobarl.experiments.comparison.cli import main as compare_main

    shutil.copytree(OLD / "compare", tmp_path / "runs")
    args = ["--strategies", "coba,dapo,greso:greso_p_easy=0.3,gvm:gvm_alpha=0.01", "--seeds", "1", "--steps", "3",
            "--prompts-per-step", "8", "--rollouts-per-prompt", "4", "--train-prompts", "64", "--heldout-prompts", "16",
            "--no-plots", "--no-progress", "--output-dir", str(tmp_path)]
    assert compare_main(args) == 0
    runs = json.loads((tmp_path / "summary.json").read_text())["runs"]
    assert len(runs) == 4 and all(r["reused"] for r in runs)
    assert compare_main([*args, "--budget", "steps"]) == 2  # another setting: the folder is refused, naming it


def test_pods_refuses_the_sizes_where_the_public_selection_repeats_a_row():
    from cobarl.policies.pods import max_variance_subset

    assert max_variance_subset(np.array([0.3, 0.9, 0.1, 0.5, 0.7]), 4).tolist() == [1, 3, 2, 2]  # the public aliasing
    for size in (5, 6):
        with pytest.raises(ValueError, match=r"between n \+ 1 and 2n - 2 for n = 4"):
            make_policy("pods", generate_size=size).begin([0, 1], 8)
    for size in (4, 7, 16):
        assert set(make_policy("pods", generate_size=size).begin([0, 1], 8).values()) == {size}
    with pytest.raises(ValueError, match="generate_size"):
        make_config({"strategy": "pods", "generate_size": 12, "rollouts_per_step": 128})  # n = 8: 12 < 15


def test_a_saved_config_reloads_as_it_was_saved(tmp_path):
    """A default the file states is the run's (the embedded task's preset cannot replace it), None is "the
    strategy's own", and a resumed run told another strategy starts from that strategy's options."""
    from cobarl.train.config_files import config_diff, dump_yaml
    from cobarl.train.rundir import CONFIG_FILE, read_saved_config

    dump_yaml(make_config({"max_budget": 128}), tmp_path / CONFIG_FILE)
    saved = read_saved_config(tmp_path)
    assert saved.strategy.max_budget == 128 and config_diff(saved, make_config({"resume": True}, base=saved)) == []
    assert make_config({"strategy": "coba-reference", "tau": None}).strategy.tau == "adaptive"
    assert make_config({"strategy": "knapsack-rl"}, base=saved).strategy.method == "knapsack-rl"


def test_options_that_would_do_nothing_are_refused():
    from cobarl.experiments.comparison.grid import expand_grid, parse_grid
    from cobarl.experiments.comparison.specs import parse_strategy
    from cobarl.integrations.verl_plan import check_rollout_n, plan_options

    for options, message in ((dict(strategy="gvm", value="coba"), "method 'gvm' plans with the 'gvm' value"),
                             (dict(strategy="greso", min_p=0.9, max_p=0.1), "min_p .* is above max_p"),
                             (dict(strategy="knapsack", tau=4), "tau applies when value is 'coba'")):
        with pytest.raises(ValueError, match=message):
            StrategyConfig(**options)
    with pytest.raises(ValueError, match="p_easy is set both"):  # an old name in the spec, the new one in the grid
        expand_grid(parse_strategy("greso:greso_p_easy=0.3"), parse_grid(["p_easy=0.4,0.5"]), 10)
    check_rollout_n(200, plan_options(StrategyConfig("dapo")))  # verl's own DAPO: uniform plans of any n >= 2
