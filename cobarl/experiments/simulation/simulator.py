"""An LLM-free learning-dynamics simulator of GRPO with per-prompt rollout budgets.

The model, stated once (see the README section "Simulator: what it captures and what it does not")::

    prompt i          cluster c(i) in 0..C-1, difficulty d_i ~ N(0, difficulty_std^2)
    cluster skill     s_c ~ N(skill_mean, skill_std^2) at step 0
    logit             z_i = s_c(i) + u_i - d_i           (u_i: prompt-specific skill, 0 at step 0)
    model             rollout j of prompt i succeeds with p_i = sigmoid(z_i)  (reward 1, else 0)

One step (the paper's order: allocate, roll out, observe): take the next M prompts of a shuffled pass over the
train split and run the strategy's rollout policy on them (:func:`cobarl.policies.run_step`, total
budget M * G * budget multiplier): a plan-before-generation allocator asks for B_i rollouts of each
(sum = the budget) in one round and trains on all of them; Reinforce-Ada samples in rounds, DAPO
draws more prompts from a seeded stream of the train split, PODS generates more per prompt, and
each keeps a subset. Rewards are Bernoulli(p_i). The step learns from the KEPT rows only: GRPO
advantages A_j of the kept rows' own groups (:func:`cobarl.group_advantages`: any group size,
std-normalised, 0 for all-equal groups), or against the policy's per-group baselines
(:func:`cobarl.advantages.baseline_advantages`: Reinforce-Ada's whole-pool statistics, DAPO's and
GRESO's public GRPO statistics, where a group of one keeps its raw reward); the
policy observes every generated reward; then one Adam-normalised policy-gradient step on the
logits. For a Bernoulli model d log pi(y) / dz = y - p, so the token-mean loss
``(1/N) sum_j A_j log pi(y_j)`` has gradient on z_i

    g_i = (1 / N) * sum_{j kept of prompt i} A_j (y_j - p_i)          (N = rollouts trained this step)

Accounting is fair: ``rollout/count`` and the cumulative ``rollouts`` are rollouts GENERATED,
``rollout/trained`` those in the loss, ``rollout/rounds`` and ``rollout/prompts`` what the step took.

What a smaller batch costs. In a real model every rollout's gradient ``A_j grad log pi(y_j)`` also
moves millions of parameters in directions unrelated to its prompt: a noise term whose second
moment per parameter is ``v = (1/N^2) sum_j A_j^2`` (per-rollout gradients of similar norm in
nearly orthogonal directions). LLM policy gradients are noise-dominated at these batch sizes, so
Adam's denominator ``sqrt(v_hat)`` (the bias-corrected running mean of v, beta2 = 0.999 as in
AdamW) is set by that noise, and the signal reaching a prompt's logit is

    delta z_i = lr * g_i / sqrt(v_hat) ~ lr * sum_{j in i} A_j (y_j - p_i) / sqrt(sum_j A_j^2)

Halving every step's rollouts (the same outcome proportions from half the samples) leaves g_i
as it is and multiplies sqrt(v_hat) by about sqrt(2): each step moves ~0.7 as far (signal-to-noise
grows as the square root of the rollouts behind a step; v_hat averages over the run, so this is
what a run-wide budget costs), and more rollouts in mixed groups raise the step's noise as well as
its signal. Adam's momentum is left out (for a prompt seen once per epoch it spreads the same total
step over later steps), and so is the random walk the noise itself adds to every logit (the same
for every strategy). The step is
shared like a kernel: a fraction ``transfer`` goes to the cluster skill (so every prompt of the
cluster, train or held-out, moves by ``transfer * delta z_i``) and the rest to u_i, so prompt i
itself moves by ``delta z_i``.

Held-out prompts share the clusters but are never trained on; held-out accuracy is
``mean sigmoid(z)`` over them (an expectation: no sampling noise).

Unreachable clusters (a task's regime, ``SimConfig.beyond_reach`` / ``wrong_reference``): their
prompts' reward probability is exactly 0, on train, held-out and validation prompts alike (a
wrong reference: the model may follow the rule, but the stored answer is wrong; beyond reach:
the right answer is never sampled). Such a prompt can never learn: its rewards are all 0 and
``y_j - p_i = 0 - 0`` makes its signal g_i exactly 0 whatever advantage a policy gives its rows,
and its cluster's skill moves only by the transfer of its own prompts' steps, all 0, so nothing
revives it (transfer never crosses clusters). The two kinds look the same from a rollout policy's
side here as in the real task; they differ only in the latent skill (a beyond-reach cluster's
is the warm-start's without the correct marker, a wrong-reference cluster's is left as it is),
which no reward or accuracy reads. Validation prompts are a third
split, drawn the same way from a separate random stream (so adding them changes no train or held-out
draw): never trained on, disjoint from both, used only to choose settings (``cobarl compare --grid``).

Common random numbers: for a seed, the task, the prompt order and the uniform draws behind every
reward (rollout j of a prompt in a step, counted across rounds: :mod:`cobarl.experiments.simulation.sim_rollouts`)
are the same for all strategies, so per-seed differences between strategies are paired.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cobarl import metrics as M
from cobarl.advantages import baseline_advantages, group_advantages
from cobarl.allocator import Allocator
from cobarl.experiments.simulation.sim_rollouts import StepDraws
from cobarl.experiments.simulation.sim_model import AdamScale, Learner, SimConfig, gradient_noise, grpo_signal, make_task
from cobarl.policies import AllocatorPolicy, PromptStream, RolloutPolicy, StrategyConfig, make_policy, run_step
from cobarl.stats import difficulty_buckets, transition_counts

DRAW_WIDTH = 128  # the shared draw matrix's columns for a policy without a max budget (the old default max_budget)
# Bins of the estimated pass rate for the budget-vs-pass-rate plot: {0}, ten bins over (0, 1), {1}.
PASS_RATE_BINS = ("0",) + tuple(f"{k / 10:.1f}-{(k + 1) / 10:.1f}" for k in range(10)) + ("1",)
PHASES = ("early", "mid", "late")

# Stream tags for np.random.default_rng([seed, tag, ...]); fixed so that runs are reproducible.
_ORDER, _EVAL = 12, 14  # 11, 15: the task (sim_model); 13, 16: rollouts (sim_rollouts)


def batch_order(seed: int, n_train: int, prompts_per_step: int, steps: int) -> np.ndarray:
    """``[steps, M]`` prompt ids: shuffled passes over the train split (a new order every epoch).

    Steps never straddle two epochs (the last partial batch of an epoch is dropped, as a
    ``drop_last`` dataloader), so a prompt appears at most once per step.
    """
    if prompts_per_step > n_train:
        raise ValueError(f"prompts_per_step={prompts_per_step} exceeds the {n_train} train prompts")
    rng = np.random.default_rng([seed, _ORDER])
    per_epoch = n_train // prompts_per_step
    out = []
    while len(out) < steps:
        order = rng.permutation(n_train)
        out.extend(order[k * prompts_per_step : (k + 1) * prompts_per_step] for k in range(per_epoch))
    return np.stack(out[:steps])


def empirical_buckets(p: np.ndarray, seed: int, tag: int, n: int) -> np.ndarray:
    """Bucket of each prompt from ``n`` sampled rollouts (common random numbers per ``tag``)."""
    u = np.random.default_rng([seed, _EVAL, tag]).random((p.size, n))
    return difficulty_buckets((u < p[:, None]).sum(axis=1), n)


def pass_rate_bin(p_hat: np.ndarray) -> np.ndarray:
    """Index into ``PASS_RATE_BINS``."""
    inner = 1 + np.minimum((p_hat * 10).astype(np.int64), 9)
    return np.where(p_hat <= 0, 0, np.where(p_hat >= 1, len(PASS_RATE_BINS) - 1, inner))


@dataclass(frozen=True)
class SimOptions:
    """What one simulated run needs besides the strategy and seed."""

    steps: int = 200
    prompts_per_step: int = 64
    rollouts_per_prompt: float = 16.0
    budget_multiplier: float = 1.0
    sim: SimConfig = field(default_factory=SimConfig)

    def total_budget(self, multiplier: float = 1.0) -> int:
        return int(round(self.prompts_per_step * self.rollouts_per_prompt * self.budget_multiplier * multiplier))


def simulate(
    strategy: StrategyConfig,
    seed: int,
    options: SimOptions,
    *,
    budget_multiplier: float = 1.0,
    callback: Callable[[int], None] | None = None,
    allocator: Allocator | None = None,
    max_generated: int | None = None,
    draw_width: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train the simulated model for ``options.steps`` steps with one allocator (or until it generated
    ``max_generated`` rollouts, when that comes first).

    Returns ``(rows, summary)``: one metrics dict per step (names from :mod:`cobarl.metrics`), and
    the final summary (initial and final metrics, difficulty transitions ``[5, 5]`` counts, budget
    per estimated-pass-rate bin and phase). ``allocator``: an allocator object to use instead of
    the strategy's own (e.g. the probe's fixed allocation); it sees the train prompts' integer ids.
    ``draw_width``: see :class:`SimRun`.
    """
    run = SimRun(strategy, seed, options, budget_multiplier, allocator=allocator, draw_width=draw_width)
    rows: list[dict[str, Any]] = []
    for step in range(options.steps):
        rows.append(run.step(step))
        if callback is not None:
            callback(step)
        if max_generated is not None and run.rollouts >= max_generated:
            break
    return rows, run.summary(rows)


class SimRun:
    """One simulated run: the task, the learner, the strategy's rollout policy and the running
    tallies. Call :meth:`step` for each step; ``learner`` then holds the current skills (per-prompt
    pass rates)."""

    def __init__(self, strategy: StrategyConfig, seed: int, options: SimOptions, budget_multiplier: float = 1.0,
                 *, allocator: Allocator | None = None, draw_width: int | None = None):
        """``draw_width``: columns of the shared matrix of uniforms behind each step's rewards, for a
        policy without a max budget (an allocator's is its ``max_budget``); None: 128, the width the
        simulator always drew with by default."""
        self.start = time.perf_counter()
        self.seed, self.options, self.cfg = seed, options, options.sim
        self.task = make_task(self.cfg, seed)
        self.learner = Learner(self.task, self.cfg)
        self.adam = AdamScale()
        self.policy: RolloutPolicy = (make_policy(strategy) if allocator is None else AllocatorPolicy(strategy, allocator))
        self.allocator = getattr(self.policy, "allocator", None)  # the plan-before-generation strategies' own
        self.width = self.allocator.config.max_budget if self.allocator is not None else draw_width or DRAW_WIDTH
        self.budget = options.total_budget(budget_multiplier)
        self.order = batch_order(seed, self.task.n_train, options.prompts_per_step, options.steps)
        self.train = np.arange(self.task.n_train)
        self.heldout = np.arange(self.task.n_train, self.task.difficulty.size)
        if self.policy.selects_prompts:  # DAPO draws its prompts from the train split, in a seeded order
            self.policy.stream = PromptStream(self.train.tolist(), seed)
        self.start_buckets = empirical_buckets(self.learner.pass_rates(self.train), seed, 0, self.cfg.eval_rollouts)
        self.bin_sum = np.zeros((len(PHASES), len(PASS_RATE_BINS)))
        self.bin_n = np.zeros((len(PHASES), len(PASS_RATE_BINS)))
        self.rollouts, self.trained, self.rounds, self.prompts = 0, 0, 0, 0

    def _rollouts(self, step: int, batch: np.ndarray):
        """Run the rollout policy's step on the simulated model; returns the step, the draws and the pass
        rates of ``draws.prompts`` (the batch's computed once, as the simulator always did)."""
        draws = StepDraws(self.seed, step, batch, self.width)
        p_batch = self.learner.pass_rates(batch)
        p_other: dict[int, float] = {}

        def generate(ids: list) -> np.ndarray:
            u, slot = draws.take(ids)
            new = [pid for pid in draws.prompts[batch.size:] if pid not in p_other]
            if new:
                p_other.update(zip(new, self.learner.pass_rates(np.asarray(new)).tolist()))
            p = p_batch[slot] if slot.max(initial=-1) < batch.size else self._rates(draws, p_batch, p_other)[slot]
            return (u < p).astype(np.float64)

        result = run_step(self.policy, batch, self.budget, generate)
        return result, draws, self._rates(draws, p_batch, p_other)

    @staticmethod
    def _rates(draws: StepDraws, p_batch: np.ndarray, p_other: dict) -> np.ndarray:
        extra = [p_other[pid] for pid in draws.prompts[p_batch.size:]]
        return np.concatenate([p_batch, np.asarray(extra, dtype=np.float64)]) if extra else p_batch

    def _learn(self, result, draws: StepDraws, p: np.ndarray):
        """One Adam-normalised policy-gradient step on the rows the policy kept, with their advantages;
        returns the GRPO statistics of the kept rows' own groups (None when nothing was kept)."""
        rows = result.kept.rows
        if rows.size == 0:
            return None
        every = rows.size == len(result.group_ids) and np.array_equal(rows, np.arange(rows.size))
        rewards = result.rewards if every else result.rewards[rows]
        ids = result.group_ids if every else [result.group_ids[j] for j in rows.tolist()]
        slot = np.fromiter((draws.slots[pid] for pid in ids), dtype=np.int64, count=len(ids))
        # a prompt drawn twice in a step (DAPO, GRESO) trains as two groups
        keys = ids if result.kept.groups is None else result.kept.group_keys(result.group_ids)
        trained = group_advantages(rewards, keys)
        kept = result.kept
        adv = trained.advantages if kept.baselines is None else baseline_advantages(
            rewards, keys, kept.baselines, scale_by_std=kept.scale_by_std, float32=kept.float32)
        scale = self.adam(gradient_noise(adv))
        self.learner.step(np.asarray(draws.prompts), scale * grpo_signal(adv, rewards, slot, p))
        return trained

    def step(self, step: int) -> dict[str, Any]:
        """Plan, roll out (in the policy's rounds), observe and learn one step; returns its metrics row."""
        batch = self.order[step]
        result, draws, p = self._rollouts(step, batch)
        trained = self._learn(result, draws, p)  # the GRPO statistics of the rows that train
        self.rollouts += len(result.group_ids)
        self.trained += int(result.kept.rows.size)
        self.rounds += result.rounds
        self.prompts += result.prompts
        if self.allocator is not None:
            plan = self.allocator.last
            self._tally_budget(step, plan.counts, plan.diagnostics["pass_rates"], plan.diagnostics["seen"])
        p_train, p_held = self.learner.pass_rates(self.train), self.learner.pass_rates(self.heldout)
        return {
            "step": step + 1,
            "rollouts": self.rollouts,
            M.EVAL_HELDOUT_ACCURACY: float(p_held.mean()),
            M.EVAL_VALIDATION_ACCURACY: float(self.learner.validation_pass_rates().mean()),
            M.EVAL_TRAIN_ACCURACY: float(p_train.mean()),
            M.EVAL_TRAIN_SOLVED: float((p_train > 0.5).mean()),
            M.ROLLOUT_EFFECTIVE_RATIO: trained.effective_ratio if trained is not None else 0.0,
            M.ROLLOUT_MIXED_GROUPS: float(trained.mixed.mean()) if trained is not None else 0.0,
            M.REWARD_MEAN: float(result.rewards.mean()),
            # rollout/count (generated), trained, rounds, prompts; the strategy's own metrics. Wall-clock
            # metrics would make rows differ between identical runs; the summary has the time.
            **{k: v for k, v in self.policy.metrics().items() if k != M.PERF_ALLOCATE_S},
        }

    def _tally_budget(self, step: int, counts: np.ndarray, p_hat: np.ndarray, seen: np.ndarray) -> None:
        """Budget by estimated pass rate and phase of training (the report's budget figure)."""
        phase = min(len(PHASES) - 1, step * len(PHASES) // self.options.steps)
        b = pass_rate_bin(p_hat[seen])
        np.add.at(self.bin_sum[phase], b, counts[seen])
        np.add.at(self.bin_n[phase], b, 1)

    def summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        end_buckets = empirical_buckets(self.learner.pass_rates(self.train), self.seed, 1, self.cfg.eval_rollouts)
        task, held = self.task, self.heldout
        return {
            "final": {k: v for k, v in rows[-1].items() if k.startswith(M.EVAL_PREFIX)} if rows else {},
            M.SUMMARY_INITIAL_ACCURACY: float(task.initial_pass_rates(held).mean()),
            M.SUMMARY_FINAL_ACCURACY: rows[-1][M.EVAL_HELDOUT_ACCURACY] if rows else None,
            "rollouts": self.rollouts,  # generated; of them trained on, and the rounds and prompts they took:
            "rollouts_trained": self.trained,
            "rounds": self.rounds,
            "prompts_consumed": self.prompts,
            "transitions": transition_counts(self.start_buckets, end_buckets),
            # planned budgets by estimated pass rate: the plan-before-generation strategies only
            "budget_by_pass_rate": ({"sum": self.bin_sum.tolist(), "count": self.bin_n.tolist()}
                                    if self.allocator is not None else None),
            "seconds": time.perf_counter() - self.start,
        }
