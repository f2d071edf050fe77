"""The README's strategy and option lists are kept by hand; this keeps them true to the registry."""

import re
from pathlib import Path

from cobarl.options import fields_by_name
from cobarl.policies import POLICIES
from cobarl.strategies import STRATEGIES

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_the_strategy_table_lists_every_strategy_with_its_policy():
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| `([a-z0-9-]+)` \|", README, flags=re.M))
    assert rows == {name: s.policy for name, s in STRATEGIES.items()}


def test_every_option_of_every_policy_is_in_the_readme():
    for name, cls in POLICIES.items():
        for option, f in fields_by_name(cls.Options).items():
            if not f.metadata.get("derived"):
                assert f"`{option}`" in README, f"{name}'s option {option} is not in README.md"
