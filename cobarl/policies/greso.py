"""GRESO (arXiv 2506.02177): skip prompts before generating them when their recent rollouts were all
correct or all wrong, with skip probabilities steered toward a target share of zero-variance groups,
on top of dynamic sampling (drop groups with one reward value, refill until the step is full).

Written from ``Infini-AI-Lab/GRESO`` at b277843 (``verl/trainer/ttis/presampling_selector.py``
``filter_examples_all_probabilistic``, ``easy_probabilistic_skip``, ``hard_probabilistic_skip``;
``verl/trainer/ppo/ray_trainer.py`` ``fit``: the p_easy/p_hard controller and the adaptive sampling
batch size; ``train-scripts/math_qwen_1_5b_dm_greso.sh`` for the defaults) and checked on vectors
that code produced (``tests/data/parity_greso.json``). As there, the filter drops groups whose float32
rewards' max equals their min (groups of one too, so n = 1 is refused), a prompt's history holds its
groups' float32 means (``reward.view(-1, n).mean(-1)``), and the kept groups train with the public GRPO
advantage (verl's ``compute_grpo_outcome_advantage``, float32: :func:`~cobarl.policies.stream.kept_groups`),
every mean and std in torch's own summation order (:mod:`cobarl.policies.torch_stats`).

Where cobarl departs from the public code (each also said where it happens):

* hard groups for the controller: the public code counts a group as hard only when all its rewards
  are exactly 0.1 (its reward for a boxed wrong answer), which a 0/1 verifier never produces, so
  p_hard would only ever rise; cobarl counts a group whose rewards are all <= 0.11, the skip rule's
  own threshold (:func:`group_kinds`).
* a round holds exactly the sampling batch size of kept (not skipped) prompts, drawn one at a time
  from the stream (the public code accumulates dataloader batches of 32 until it has at least that
  many, then trims to a multiple of the GPU count); a round draws at most as many prompts as the
  data hold (more only until one is kept), which binds only on small data or when nearly all skip.
  A prompt drawn again in a later round of the step (after the data's epoch ended) trains as its own
  group, as in the public code.
* a step always trains ``prompts`` groups: it never trains short on a "last sampling" round (the
  public flag), it draws another round, up to ``max_gen_batches`` (the public code has no cap).
* the zero-variance and all-correct shares are counted per group, any group size (the public metrics
  reshape the rewards as ``view(-1, 8)``: right only for groups of 8).
* a round whose groups all have one reward value: the public estimate divides by zero and crashes;
  :func:`next_sampling` refuses it, and the policy uses the estimate's limit (the default size).
* skip draws come from a numpy Generator seeded by (stream seed, step), float32 like ``torch.rand``.
* the first round of a step holds ``ceil(sampling_factor x prompts)`` prompts (public: the
  sampling_batch_size key, 384 for 256 trained: 1.5); the refill floor of 64 prompts, hard-coded in
  the public code, is the option ``min_sampling_batch`` (default 64) for small runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cobarl.options import OptionSet, option
from cobarl.policies.base import Kept, Request, RolloutPolicy, register_policy
from cobarl.policies.stream import kept_groups, max_gen_batches_option, refuse_another_batch, round_groups, stream_step
from cobarl.policies.torch_stats import torch_mean
from cobarl.strategies import register_strategy

EASY_THRESHOLD = 0.98  # a visit's mean reward >= this counts toward the easy streak (PS L111)
HARD_THRESHOLD = 0.11  # <= this counts toward the hard streak (PS L131, L137)
KEEP_FLOOR = 0.01  # skip probability = 1 - max(p ** streak, KEEP_FLOOR) (PS L117, L142)
P_STEP = 0.01  # the controller's step (RT L1211-1219)
SKIP_CODES = {"skip_easy": 0, "skip_hard": 1, "keep": 2}  # the public skip_log codes


def easy_streak(history: Sequence[float]) -> int:
    """Trailing visits whose mean reward is >= 0.98."""
    count = 0
    for mean in reversed(history):
        if mean < EASY_THRESHOLD:
            break
        count += 1
    return count


def hard_streak(history: Sequence[float]) -> int:
    """Trailing visits whose mean reward is <= 0.11."""
    count = 0
    for mean in reversed(history):
        if mean > HARD_THRESHOLD:
            break
        count += 1
    return count


def skip_probability(p: float, streak: int) -> float:
    """``1 - max(p ** streak, 0.01)`` (0 for no streak; at most 0.99)."""
    return 1 - max(p**streak, KEEP_FLOOR)


@dataclass(frozen=True)
class SkipDecision:
    """One prompt's pre-generation decision: ``keep``, ``skip_easy`` or ``skip_hard``, with the skip
    probabilities the rule computed (None: not computed, as the public functions return early)."""

    decision: str
    easy_prob: float | None = None
    hard_prob: float | None = None


def skip_decision(history: Sequence[float], p_easy: float, p_hard: float, draw: Callable[[], float]) -> SkipDecision:
    """The public rule for one prompt, consuming ``draw()`` exactly as it does: an unseen prompt is kept
    with no draw; a seen one always takes the easy draw (even at probability 0); the hard draw follows
    only when the easy one did not skip and the last mean is <= 0.11. A draw skips when it is strictly
    below the probability."""
    if not history:
        return SkipDecision("keep")
    easy = skip_probability(p_easy, easy_streak(history))
    if draw() < easy:
        return SkipDecision("skip_easy", easy)
    if history[-1] > HARD_THRESHOLD:
        return SkipDecision("keep", easy)
    hard = skip_probability(p_hard, hard_streak(history))
    return SkipDecision("skip_hard" if draw() < hard else "keep", easy, hard)


def pooled_ratios(rounds: Sequence[tuple[int, float, float]]) -> tuple[float, float]:
    """(easy, hard) share over a step's rounds ``(rows, easy_ratio, hard_ratio)``, weighted by rows, summed
    in the public code's order."""
    easy = hard = total = 0
    for rows, easy_ratio, hard_ratio in rounds:
        easy += easy_ratio * rows
        hard += hard_ratio * rows
        total += rows
    return easy / total, hard / total


def update_probabilities(p_easy: float, p_hard: float, easy_ratio: float, hard_ratio: float, *,
                         target_zero_variance: float = 0.25, min_p: float = 0.05,
                         max_p: float = 0.95) -> tuple[float, float]:
    """One controller step (p_hard first, then p_easy): a share at or above its target (T/3 easy,
    2T/3 hard) lowers p by 0.01 (floored at ``min_p``: skip more), below it raises p (capped at ``max_p``).
    The caller applies it only after the data's first epoch."""
    easy_target, hard_target = target_zero_variance / 3, target_zero_variance * 2 / 3
    p_hard = max(p_hard - P_STEP, min_p) if hard_ratio >= hard_target else min(p_hard + P_STEP, max_p)
    p_easy = max(p_easy - P_STEP, min_p) if easy_ratio >= easy_target else min(p_easy + P_STEP, max_p)
    return p_easy, p_hard


@dataclass(frozen=True)
class SamplingDecision:
    """After a round: train (``train_rows`` rows) or sample another round of ``batch_size`` prompts."""

    train: bool
    batch_size: int
    last_sampling: bool
    estimate: int | None = None
    train_rows: int | None = None


def next_sampling(accumulated_rows: int, train_rows: int, n: int, zero_variance_ratio: float, default: int,
                  last_sampling: bool = False, full_sampling_bs: bool = False, floor: int = 64) -> SamplingDecision:
    """The public adaptive sampling batch size: with fewer kept rows than ``train_rows`` (and no last-round
    flag), the next round's prompts are ``max(min(est, default), floor)`` with
    ``est = int(missing rows / (1 - zero-variance ratio of this round) / n * 1.25)``, and the round is
    flagged last when ``est <= default``. A zero-variance ratio of 1 is refused (the public code divides
    by zero)."""
    if accumulated_rows >= train_rows or last_sampling:
        return SamplingDecision(True, default, False, train_rows=min(accumulated_rows, train_rows))
    if zero_variance_ratio >= 1:
        raise ValueError("every group of the round had one reward value (zero-variance ratio 1): GRESO's sampling "
                         "batch size estimate divides by 1 - ratio")
    estimate = int((train_rows - accumulated_rows) / (1 - zero_variance_ratio) / n * 1.25)
    last = estimate <= default
    size = max(min(estimate, default), floor)
    if full_sampling_bs:
        size, last = default, False
    return SamplingDecision(False, size, last, estimate)


def float32_ratio(count: int, groups: int) -> float:
    """``count / groups`` in float32, as the public metrics compute their ratios."""
    return float(np.float32(count) / np.float32(groups))


def group_kinds(values: np.ndarray) -> tuple[bool, bool]:
    """(all correct, hard) for the controller, of the float32 rewards: every reward exactly 1 (public),
    every reward <= 0.11 (cobarl; the public code asks for every reward exactly 0.1, see the module docstring)."""
    v = np.asarray(values, dtype=np.float32).astype(np.float64)
    return bool(np.all(v == 1)), bool(np.all(v <= HARD_THRESHOLD))


def greso_keeps_group(values: np.ndarray) -> bool:
    """GRESO's filter (``ttis.filter_zero_advantage``): a group trains when its float32 rewards' max and min
    differ; a group of one never does (DAPO's filter keeps it)."""
    v = np.asarray(values, dtype=np.float32)
    return v.size > 1 and bool(v.max() != v.min())


@dataclass(frozen=True)
class GresoOptions(OptionSet):
    """GRESO's options (``train-scripts/math_qwen_1_5b_dm_greso.sh`` settings)."""

    sampling_factor: float = option(
        1.5, "GRESO: prompts generated in a step's first round (after skipping), as a multiple of the prompts trained "
        "per step (public: sampling_batch_size 384 / real_train_batch_size 256 = 1.5).", ge=1)
    min_sampling_batch: int = option(64, "GRESO: fewest prompts in a refill round (public: 64, hard-coded).", ge=1)
    max_gen_batches: int = max_gen_batches_option()
    p_easy: float = option(
        0.5, "GRESO: initial p_easy; a prompt whose last k groups were all correct is skipped with probability "
        "1 - max(p_easy^k, 0.01) (public: 0.5).", gt=0, le=1)
    p_hard: float = option(
        0.5, "GRESO: initial p_hard, the same for groups all wrong (mean reward <= 0.11) (public: 0.5).", gt=0, le=1)
    target_zero_variance: float = option(
        0.25, "GRESO: target share of zero-variance groups; p_easy steers the all-correct share to 1/3 of it, p_hard "
        "the all-wrong share to 2/3 (public: 0.25).", gt=0, le=1)
    min_p: float = option(0.05, "GRESO: lower bound of p_easy and p_hard (public: 0.05).", ge=0, le=1)
    max_p: float = option(0.95, "GRESO: upper bound of p_easy and p_hard (public: 0.95).", ge=0, le=1)

    def problems(self):
        if self.min_p > self.max_p:
            yield f"min_p ({self.min_p:g}) is above max_p ({self.max_p:g}): the controller's bounds on p_easy and p_hard"


@register_policy("greso")
class GresoPolicy(RolloutPolicy):
    """Each round draws prompts from the data stream one at a time, skips them by :func:`skip_decision`
    until it holds the round's size (the first round of a step ``sampling_factor x prompts``, a
    refill round :func:`next_sampling`'s size), and generates n = total_budget / prompts rollouts for
    each kept one. Every generated group's mean reward joins its prompt's history (dropped groups too);
    groups with one reward value (max = min) are dropped; the step ends once ``prompts`` groups were kept (the surplus
    is discarded) and fails after ``max_gen_batches`` rounds. Once per step, after the data's first
    epoch, p_easy and p_hard move toward the target share of all-correct and hard groups.

    State (saved with the policy): the histories, p_easy, p_hard, the step counter that seeds the skip
    draws, and skip counts; the stream's position is saved by the base class."""

    selects_prompts = True
    decides = "before and after generation"
    Options = GresoOptions
    own_baselines = True  # the public GRPO: (r - mean) / (std + 1e-6) per kept group, float32
    baseline_scale = "group"
    baselines_are = "each kept group's mean and unbiased std, as the public code's GRPO: (r - mean) / (std + 1e-6)"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.history: dict = {}
        self.p_easy, self.p_hard = float(self.options.p_easy), float(self.options.p_hard)
        self.steps = 0
        self.skipped = {"skip_easy": 0, "skip_hard": 0}

    def begin(self, prompt_ids: list, total_budget: int) -> Request:
        self.n, self.want = stream_step("greso", prompt_ids, total_budget, self.stream)
        if self.want > len(self.stream.ids):
            raise ValueError(f"greso trains {self.want} prompts per step but the data hold {len(self.stream.ids)}")
        if self.n < 2:
            raise ValueError("greso trains n = total_budget / prompts = 1 rollout per prompt, but its public filter drops "
                             "every group of one (max = min), so no step could fill: use at least 2 rollouts per prompt")
        self.default_size = math.ceil(self.options.sampling_factor * self.want)
        self.kept: list[tuple] = []  # (prompt id, step rows, rewards) of each kept group
        self.rounds: list[tuple[int, float, float]] = []  # (rows, all-correct share, hard share) per round
        self.batches, self.seen_rows, self.drawn, self.last_kept_at = 0, 0, 0, 0
        self.step_skipped = 0
        rng = np.random.default_rng([self.stream.seed, 13, self.steps])
        self._draw = lambda: float(rng.random(dtype=np.float32))
        return self._next_round(self.default_size)

    def _next_round(self, size: int) -> Request:
        """``size`` distinct prompts kept by the rule, drawn from the stream; a round draws at most as many
        prompts as the data hold (more only until one is kept), so small data are not read over and over."""
        chosen: dict = {}
        drawn, limit = 0, len(self.stream.ids)
        self.batches += 1
        while len(chosen) < size and (drawn < limit or not chosen) and len(chosen) < limit:
            pid, drawn = self.stream.take(1, exclude=chosen)[0], drawn + 1
            decision = skip_decision(self.history.get(pid, ()), self.p_easy, self.p_hard, self._draw).decision
            if decision == "keep":
                chosen[pid] = self.n
            else:
                self.skipped[decision] += 1
                self.step_skipped += 1
        self.drawn += drawn
        return chosen

    def after_round(self, ids: list, rewards: np.ndarray) -> Request:
        groups = round_groups(ids, self.seen_rows)
        zero = easy = hard = 0
        for pid, rows in groups.items():
            values = np.nan_to_num(rewards[np.asarray(rows) - self.seen_rows], nan=0.0)
            self.history.setdefault(pid, []).append(torch_mean(values))  # the public reward.view(-1, n).mean(-1)
            all_correct, all_hard = group_kinds(values)
            easy, hard = easy + all_correct, hard + all_hard
            if greso_keeps_group(values):
                self.kept.append((pid, rows, values))
                self.last_kept_at = self.drawn
            else:
                zero += 1
        self.seen_rows += len(ids)
        self.rounds.append((len(ids), float32_ratio(easy, len(groups)), float32_ratio(hard, len(groups))))
        if len(self.kept) >= self.want:
            return {}
        refuse_another_batch("greso", self.batches, self.options.max_gen_batches, "max_gen_batches",
                             len(self.kept), self.want, self.drawn - self.last_kept_at, len(self.stream.ids))
        ratio = float32_ratio(zero, len(groups))
        if ratio >= 1:  # the public estimate divides by zero here; its limit is the default size
            return self._next_round(self.default_size)
        return self._next_round(next_sampling(len(self.kept) * self.n, self.want * self.n, self.n, ratio,
                                              self.default_size, floor=self.options.min_sampling_batch).batch_size)

    def _epoch(self) -> int:
        """The data epoch of the latest prompt drawn (the public dataloader epoch)."""
        return self.stream.epoch if self.stream.position > 0 else max(self.stream.epoch - 1, 0)

    def finish(self) -> Kept:
        if self._epoch() > 0:
            easy_ratio, hard_ratio = pooled_ratios(self.rounds)
            self.p_easy, self.p_hard = update_probabilities(
                self.p_easy, self.p_hard, easy_ratio, hard_ratio, target_zero_variance=self.options.target_zero_variance,
                min_p=self.options.min_p, max_p=self.options.max_p)
        self.steps += 1
        return kept_groups(self.kept[: self.want])

    def metrics(self) -> dict[str, float]:
        from cobarl import metrics as M

        out = super().metrics()
        if self.last is not None:
            out[M.ROLLOUT_SKIPPED] = float(self.step_skipped)
        return out

    def _state(self) -> dict:
        return {"greso": {"history": [[pid, list(means)] for pid, means in self.history.items()],
                          "p_easy": self.p_easy, "p_hard": self.p_hard, "steps": self.steps, "skipped": dict(self.skipped)}}

    def _load_state(self, state: dict) -> None:
        mine = state["greso"]
        self.history = {pid: [float(m) for m in means] for pid, means in mine["history"]}
        self.p_easy, self.p_hard = float(mine["p_easy"]), float(mine["p_hard"])
        self.steps, self.skipped = int(mine["steps"]), {k: int(v) for k, v in mine["skipped"].items()}


register_strategy("greso", "greso", "GRESO: skip prompts whose recent groups were all correct or all wrong before "
                  "generating, then DAPO-style dynamic sampling")
