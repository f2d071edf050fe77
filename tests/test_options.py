"""One source per option: every policy's options read the same through every front end."""

from __future__ import annotations

import json

import pytest

from cobarl import STRATEGIES
from cobarl.experiments.comparison.grid import parse_grid
from cobarl.experiments.comparison.specs import parse_strategy
from cobarl.integrations.verl_plan import parse_settings
from cobarl.policies import POLICIES
from cobarl.train.cli import config_from_args
from cobarl.train.config import make_config, strategy_option_fields
from cobarl.train.config_files import load_yaml

# field -> (strategy it is valid with, the value as typed, the value the field holds); a value unlike
# the default, so a front end that drops the option fails too.
CASES = {
    "strategy": ("knapsack", "knapsack", "knapsack"),
    "min_budget": ("coba", "4", 4),
    "schedule": ("coba", "explore-to-exploit", "explore-to-exploit"),
    "method": ("coba", "heap", "heap"),
    "value": ("coba", "knapsack", "knapsack"),
    "variant": ("reinforce-ada", "positive_focused", "positive_focused"),
    "max_budget": ("coba", "64", 64),
    "kappa": ("coba", "7.5", 7.5),
    "window": ("coba", "3", 3),
    "gamma": ("coba", "5", 5.0),
    "tau": ("coba", "adaptive", "adaptive"),
    "success": ("coba", ">0.5", ">0.5"),
    "stats": ("coba", "recent-rollouts", "recent-rollouts"),
    "stats_window": ("coba", "2", 2),
    "estimator": ("coba", "posterior", "posterior"),
    "prior": ("coba", "global", "global"),
    "recent_rollouts": ("knapsack", "8", 8),
    "min_rollouts": ("knapsack", "4", 4),
    "fixed_alpha": ("fixed-beta", "2.5", 2.5),
    "fixed_beta": ("fixed-beta", "3.5", 3.5),
    "round_size": ("reinforce-ada", "16", 16),
    "max_rounds": ("reinforce-ada-pos", "2", 2),
    "positive_threshold": ("reinforce-ada", "0.5", 0.5),
    "pool_baseline": ("reinforce-ada", "mean", "mean"),
    "scale_by_std": ("reinforce-ada", "true", True),
    "gen_batch_factor": ("dapo", "2", 2),
    "max_gen_batches": ("dapo", "0", 0),
    "weight_alpha": ("gvm", "0.01", 0.01),
    "weight_beta": ("gvm", "3", 3.0),
    "generate_size": ("pods", "16", 16),
    "sampling_factor": ("greso", "2", 2.0),
    "min_sampling_batch": ("greso", "8", 8),
    "p_easy": ("greso", "0.7", 0.7),
    "p_hard": ("greso", "0.3", 0.3),
    "target_zero_variance": ("greso", "0.5", 0.5),
    "min_p": ("greso", "0.1", 0.1),
    "max_p": ("greso", "0.9", 0.9),
}


def test_every_option_has_a_case():
    assert set(CASES) == {"strategy", *strategy_option_fields()}


@pytest.mark.parametrize("name", list(CASES))
def test_an_option_reads_the_same_through_every_front_end(tmp_path, name):
    strategy, text, want = CASES[name]
    flag = "--" + name.replace("_", "-")
    got = {"cobarl train flag": config_from_args(["--strategy", strategy, flag, text]).strategy}
    path = tmp_path / "c.yaml"
    lines = {"strategy": strategy, name: want}  # each value as YAML types it
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in lines.items()))
    got["YAML"] = make_config(load_yaml(path)).strategy
    spec = strategy if name == "strategy" else f"{strategy}:{name}={text}"
    got["cobarl compare spec"] = parse_strategy(spec).strategy_config(10)
    for typed, value in (("text", text), ("typed", want)):
        if POLICIES[STRATEGIES[strategy].policy].verl_native:  # verl's own feature: the plugin refuses its options
            with pytest.raises(ValueError, match="verl's own feature"):
                parse_settings({"strategy": strategy, name: value})
            continue
        got[f"verl ({typed})"] = parse_settings({"strategy": strategy, name: value}).strategy
    for where, config in got.items():
        assert getattr(config, name) == want and type(getattr(config, name)) is type(want), where
    if name != "strategy":  # a grid varies options of one strategy
        assert parse_grid([f"{name}={text}"]) == {name: (want,)}


def test_a_spec_option_is_refused_with_what_it_takes():
    with pytest.raises(ValueError, match="recent_rollouts must be an integer >= 1, got 'x'"):
        parse_strategy("knapsack:recent_rollouts=x")
