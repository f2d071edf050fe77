"""``cobarl compare --train-args``: any other ``cobarl train`` option for every real run, read by train's own
parser; options compare sets itself are refused, not silently overridden."""

from __future__ import annotations

import shlex
from typing import Any


# cobarl train options that compare sets for every run itself (the allocator's come from --strategies).
_COMPARE_SETS = ("seed", "max_steps", "max_generated", "prompts_per_step", "rollouts_per_prompt", "rollouts_per_step",
                 "output_dir", "resume", "fresh", "config")


def train_args(text: str | None, backend: str) -> dict[str, Any]:
    """``--train-args``: cobarl train's own parser reads them, so every train option is accepted as it is there."""
    if text is None:
        return {}
    if backend != "real":
        raise ValueError("--train-args passes options to cobarl train, which only the real back-end runs; add --backend real")
    from cobarl.train.cli import build_parser as train_parser
    from cobarl.train.config import strategy_option_fields

    try:
        words = shlex.split(text)
    except ValueError as err:  # an unbalanced quote: say which option's text it is
        raise ValueError(f"--train-args {text!r}: cannot be split into options ({err}); check its quotes") from None
    try:
        values = vars(train_parser().parse_args(words))
    except SystemExit:
        raise ValueError(f"--train-args {text!r}: not valid cobarl train options (see cobarl train --help)") from None
    strategy_keys = {"strategy", *strategy_option_fields()}
    taken = sorted(k for k in values if k in _COMPARE_SETS or k in strategy_keys)
    if taken:
        raise ValueError(f"--train-args: {', '.join(taken)} set by compare itself (the strategy and its options go in the "
                         "--strategies spec, e.g. coba:max_budget=16; steps, seeds and budgets in compare's own flags: --steps, "
                         "--seeds, --budget, --budget-multiplier)")
    return values
