"""The embedded tasks ``cobarl train`` runs offline: each with its splits and its warm-start recipe.

One record per task, so the data loader, the tiny model's tokenizer and its warm-start all read the
same definition. ``families-v4`` is the default (README "The embedded task"); ``arith-v3`` is the
previous default, kept so that its documented results stay reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from cobarl.tasks import arithmetic, families


@dataclass(frozen=True)
class EmbeddedTask:
    """An embedded task and the warm-start that gives the tiny model its starting spread of pass rates.

    Attributes:
        name: the ``--task`` value; also the cache name of its model (``tiny-<name>-seed<seed>``).
        summary: one line for ``--help``.
        make_splits: ``(n_train, n_eval, *, seed) -> (train, held_out)`` lists of `Problem`.
        make_validation: ``(held_out, n, *, seed) -> validation`` list, disjoint from both.
        make_warm_start: ``(n, *, seed) -> problems`` from the train pool for the supervised warm-start.
        chars: every character of a prompt or answer (the tokenizer's vocabulary).
        mistake: the habitual wrong answer as a function of the right one.
        mistake_rate: per ``difficulty``, the share of warm-start labels replaced by ``mistake``.
        warm_start_problems, warm_start_steps, warm_start_lr, warm_start_batch: the supervised stage.
        max_prompts: most prompts one split (train, held-out, validation) may ask for: splits are drawn
            by rejection sampling from fixed pools, which slows to minutes (or runs dry) beyond it.
        max_budget: the task's preset for an allocator's ``max_budget``, 4 x its nominal 8 rollouts per
            prompt (the library default, 128, would let one prompt take a quarter of a 128-rollout step;
            docs/benchmarks.md measured the task with it). ``cobarl train`` (and so ``cobarl compare
            --backend real``) applies it only when this task runs and ``--max-budget`` is not given.
    """

    name: str
    summary: str
    make_splits: Callable[..., tuple[list[arithmetic.Problem], list[arithmetic.Problem]]]
    make_validation: Callable[..., list[arithmetic.Problem]]
    make_warm_start: Callable[..., list[arithmetic.Problem]]
    chars: str
    mistake: Callable[[str], str]
    mistake_rate: Mapping[int, float]
    warm_start_problems: int
    warm_start_steps: int
    warm_start_lr: float
    warm_start_batch: int = 64
    max_prompts: int = 20_000
    max_budget: int = 32
    regime: families.Regime | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-friendly recipe, written next to the cached model."""
        return {"task": self.name, "mistake": self.mistake.__name__,
                "mistake_rate": {str(k): v for k, v in self.mistake_rate.items()},
                "warm_start_problems": self.warm_start_problems, "warm_start_steps": self.warm_start_steps,
                "warm_start_lr": self.warm_start_lr, "warm_start_batch": self.warm_start_batch,
                **({"regime": self.regime.describe()} if self.regime is not None and self.regime.unreachable else {})}


def _families_task(name: str, summary: str, regime: families.Regime) -> EmbeddedTask:
    """A families task in one regime: the same prompts as task v4 for every seed, its labels and
    warm-start set by ``regime`` (``docs/task-regimes.md``)."""
    return EmbeddedTask(
        name=name,
        summary=summary,
        make_splits=partial(families.make_splits, regime=regime),
        make_validation=partial(families.make_validation, regime=regime),
        # The warm-start learns the rule (no wrong references): the model is right where the data is not.
        make_warm_start=lambda n, *, seed: families.make_problems(n, seed=seed, split="train"),
        chars=families.CHARS,
        mistake=families.wrong_marker,
        mistake_rate=regime.warm_start_rates,
        warm_start_problems=6000,
        warm_start_steps=2000,
        warm_start_lr=5e-3,
        regime=regime,
    )


REGIMES: dict[str, families.Regime] = {
    "families-v4": families.Regime(),
    # About half of the prompts at 0/16 out of reach: the four hardest families, two of each kind.
    "families-u50": families.Regime(beyond_reach=frozenset({20, 22}), wrong_reference=frozenset({21, 23})),
    # About nine in ten: the ten hardest families (five of each kind); the reachable hard families left
    # (q 0.75-0.94) rarely sit at 0/16.
    "families-u90": families.Regime(beyond_reach=frozenset({14, 16, 18, 20, 22}),
                                    wrong_reference=frozenset({15, 17, 19, 21, 23})),
}
"""The families presets along the unreachable share of the 0/16 prompts (``docs/task-regimes.md``)."""


TASKS: dict[str, EmbeddedTask] = {
    "families-v4": _families_task(
        "families-v4", "24 families, each with its own answer marker and habitual mistake (default)",
        REGIMES["families-v4"]),
    "families-u50": _families_task(
        "families-u50", "families-v4 with about half of its 0/16 prompts out of reach (beyond reach or "
        "a wrong reference)", REGIMES["families-u50"]),
    "families-u90": _families_task(
        "families-u90", "families-v4 with about nine in ten of its 0/16 prompts out of reach",
        REGIMES["families-u90"]),
    "arith-v3": EmbeddedTask(
        name="arith-v3",
        summary="signed one-digit sums, the minus sign dropped on negative results (the previous default)",
        make_splits=arithmetic.make_splits,
        make_validation=arithmetic.make_validation,
        make_warm_start=lambda n, *, seed: arithmetic.make_problems(n, seed=seed, split="train"),
        chars="0123456789+-*/=()., \n",
        mistake=arithmetic.sign_dropped,
        mistake_rate={3: 0.7, 4: 0.9},
        warm_start_problems=6000,
        warm_start_steps=3000,
        warm_start_lr=5e-3,
        max_prompts=4_000,  # signed one-digit sums: a small pool (5000 + 5000 took 40 s; 20000 did not finish in 4 min)
    ),
}
DEFAULT_TASK = "families-v4"


def get_task(name: str) -> EmbeddedTask:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def task_preset(dataset: str | None, task: str | None) -> dict[str, Any]:
    """The strategy options a ``cobarl train`` run's task presets (an allocator's): the embedded task's
    ``max_budget`` (see `EmbeddedTask`); none for ``--dataset``, which keeps the library defaults.
    An option the user sets overrides its preset."""
    chosen = TASKS.get(task or DEFAULT_TASK) if dataset is None else None
    return {"max_budget": chosen.max_budget} if chosen is not None else {}
