"""An LLM-free learning-dynamics simulator of GRPO with per-prompt rollout budgets.

The model, stated once (see the README section "Simulator: what it captures and what it does not")::

    prompt i          cluster c(i) in 0..C-1, difficulty d_i ~ N(0, difficulty_std^2)
    cluster skill     s_c ~ N(skill_mean, skill_std^2) at step 0
    logit             z_i = s_c(i) + u_i - d_i           (u_i: prompt-specific skill, 0 at step 0)
    policy            rollout j of prompt i succeeds with p_i = sigmoid(z_i)  (reward 1, else 0)

One step (the paper's order: allocate, roll out, observe): take the next M prompts of a shuffled pass over the
train split and run the strategy's rollout policy on them (:func:`cobarl.policies.run_step`, total
budget M * G * budget multiplier): a plan-before-generation allocator asks for B_i rollouts of each
(sum = the budget) in one round and trains on all of them; Reinforce-Ada samples in rounds, DAPO
draws more prompts from a seeded stream of the train split, PODS generates more per prompt, and
each keeps a subset. Rewards are Bernoulli(p_i). The step learns from the KEPT rows only: GRPO
advantages A_j of the kept rows' own groups (:func:`cobarl.group_advantages`: any group size,
std-normalised, 0 for all-equal groups), or against the policy's per-prompt baselines
(:func:`cobarl.advantages.baseline_advantages`: Reinforce-Ada's whole-pool statistics); the
policy observes every generated reward; then one Adam-normalised policy-gradient step on the
logits. For a Bernoulli policy d log pi(y) / dz = y - p, so the token-mean loss
``(1/N) sum_j A_j log pi(y_j)`` has gradient on z_i

    g_i = (1 / N) * sum_{j kept of prompt i} A_j (y_j - p_i)          (N = rollouts trained this step)

Accounting is fair: ``rollout/count`` and the cumulative ``rollouts`` are rollouts GENERATED,
``rollout/trained`` those in the loss, ``rollout/rounds`` and ``rollout/prompts`` what the step took.

What a smaller batch costs. In a real policy every rollout's gradient ``A_j grad log pi(y_j)`` also
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
from cobarl.experiments.simulation.sim_rollouts import StepDraws, rollout_uniforms, sample_rewards
from cobarl.policies import AllocatorPolicy, PromptStream, RolloutPolicy, StrategyConfig, make_policy, run_step
from cobarl.stats import difficulty_buckets, transition_counts

# Bins of the estimated pass rate for the budget-vs-pass-rate plot: {0}, ten bins over (0, 1), {1}.
PASS_RATE_BINS = ("0",) + tuple(f"{k / 10:.1f}-{(k + 1) / 10:.1f}" for k in range(10)) + ("1",)
PHASES = ("early", "mid", "late")

# Stream tags for np.random.default_rng([seed, tag, ...]); fixed so that runs are reproducible.
_TASK, _ORDER, _EVAL, _VALIDATION = 11, 12, 14, 15  # 13, 16: rollouts (sim_rollouts)


DRAW_WIDTH = 128  # the shared draw matrix's columns for a policy without a max budget (the old default max_budget)

@dataclass(frozen=True)
class SimConfig:
    """The simulated task and learner. Defaults were fixed a priori, before any comparison was run.

    Attributes:
        train_prompts: prompts in the training split.
        heldout_prompts: prompts never trained on, in the same clusters (evaluation only).
        validation_prompts: a third split, never trained on, disjoint from train and held-out, in
            the same clusters and drawn from the same distribution; ``cobarl compare --grid``
            selects settings on it so the held-out split stays untouched for the final number.
        clusters: groups of related prompts that share a skill (transfer happens within a cluster).
        skill_mean, skill_std: initial cluster skills ~ N(mean, std^2) in logit units.
        difficulty_std: per-prompt difficulty ~ N(0, std^2). With the defaults the initial pass
            rates are U-shaped like a base model on DAPO-Math: mean ~0.35, about a quarter of the
            prompts below 5 % and a tenth above 95 %.
        cluster_skills: explicit initial skill of each cluster (logits, one per cluster), e.g. a
            task whose families have known starting pass rates (:func:`cluster_skills_from_pass_rates`);
            ``None`` (default) draws them from N(skill_mean, skill_std^2). The draw is made either
            way, so difficulties do not depend on this setting.
        lr: Adam's learning rate on the logits: the step is ``lr * g_i / sqrt(v_hat)``.
            The one calibrated constant: chosen from {0.2, 0.3, 0.5, 1.0} with the *uniform* GRPO
            baseline only, so that its share of initially-medium prompts that end at p = 1
            (53.2 %) is near GRPO's 46.8 % in CoBA-RL Fig. 7; no other strategy was looked at.
        transfer: share of a prompt's logit step that goes to its cluster's skill, i.e. that
            every other prompt of the cluster receives (a kernel value; 0 = no generalisation).
        eval_rollouts: samples per prompt for the empirical difficulty buckets (paper: avg@16).
        beyond_reach, wrong_reference: clusters unreachable by sampling (the task's regime,
            ``cobarl.tasks.families.Regime``): every reward of their prompts is 0 and so is their
            accuracy (see the module docstring). Empty (default): every cluster is reachable.
    """

    train_prompts: int = 1024
    heldout_prompts: int = 256
    validation_prompts: int = 256
    clusters: int = 32
    skill_mean: float = -1.0
    skill_std: float = 1.0
    difficulty_std: float = 2.5
    lr: float = 1.0
    transfer: float = 0.02
    eval_rollouts: int = 16
    cluster_skills: tuple[float, ...] | None = None
    beyond_reach: tuple[int, ...] = ()
    wrong_reference: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if min(self.train_prompts, self.heldout_prompts, self.validation_prompts, self.clusters) < 1:
            raise ValueError("train_prompts, heldout_prompts, validation_prompts and clusters must all be >= 1")
        if not 0.0 <= self.transfer <= 1.0:
            raise ValueError(f"transfer must lie in [0, 1], got {self.transfer}")
        if self.lr < 0 or self.skill_std < 0 or self.difficulty_std < 0 or self.eval_rollouts < 1:
            raise ValueError("lr, skill_std and difficulty_std must be >= 0 and eval_rollouts >= 1")
        if self.cluster_skills is not None:
            skills = np.asarray(self.cluster_skills, dtype=np.float64)
            if skills.shape != (self.clusters,) or not np.isfinite(skills).all():
                raise ValueError(f"cluster_skills must hold {self.clusters} finite logits (one per cluster), "
                                 f"got {len(self.cluster_skills)} values")
        for name in ("beyond_reach", "wrong_reference"):
            if not set(getattr(self, name)) <= set(range(self.clusters)):
                raise ValueError(f"{name}: cluster indices in 0..{self.clusters - 1}, got {list(getattr(self, name))}")
        if set(self.beyond_reach) & set(self.wrong_reference):
            raise ValueError(f"clusters {sorted(set(self.beyond_reach) & set(self.wrong_reference))} are both beyond "
                             "reach and wrong-reference; a cluster is one kind")


@dataclass(frozen=True)
class Task:
    """One sampled task. Prompts ``0..n_train-1`` are the train split, the rest are held out; the
    validation split is kept apart (its own arrays), so prompt ids and held-out indices are as
    without it.

    Attributes:
        cluster: ``[P]`` cluster of each prompt.
        difficulty: ``[P]`` d_i.
        skill0: ``[C]`` initial cluster skills.
        n_train: size of the train split.
        validation_cluster: ``[V]`` cluster of each validation prompt.
        validation_difficulty: ``[V]`` d_i of each validation prompt.
        unreachable: ``[C]`` whether a cluster's rewards are always 0 (either kind of regime);
            ``None``: every cluster is reachable.
    """

    cluster: np.ndarray
    difficulty: np.ndarray
    skill0: np.ndarray
    n_train: int
    validation_cluster: np.ndarray
    validation_difficulty: np.ndarray
    unreachable: np.ndarray | None = None

    def reward_rates(self, z: np.ndarray, clusters: np.ndarray) -> np.ndarray:
        """Probability of reward 1 at logits ``z`` of prompts in ``clusters``: ``sigmoid(z)``, 0 where unreachable."""
        p = sigmoid(z)
        return p if self.unreachable is None else np.where(self.unreachable[clusters], 0.0, p)

    def initial_pass_rates(self, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Pass rates of prompts ``idx`` at step 0 (cluster skills as drawn, u = 0)."""
        return self.reward_rates(self.skill0[self.cluster[idx]] - self.difficulty[idx], self.cluster[idx])


def make_task(config: SimConfig, seed: int) -> Task:
    """Sample clusters, difficulties and initial skills for ``seed`` (identical for every strategy)."""
    rng = np.random.default_rng([seed, _TASK])
    n_train, n_all = config.train_prompts, config.train_prompts + config.heldout_prompts
    # Round-robin clusters keep every cluster present in both splits.
    cluster = np.concatenate([np.arange(n_train) % config.clusters, np.arange(n_all - n_train) % config.clusters])
    difficulty = rng.normal(0.0, config.difficulty_std, n_all)
    skill0 = rng.normal(config.skill_mean, config.skill_std, config.clusters)
    if config.cluster_skills is not None:
        skill0 = np.asarray(config.cluster_skills, dtype=np.float64)
    # The validation split comes from its own stream: the draws above are those of a task without it.
    n_val = config.validation_prompts
    validation_difficulty = np.random.default_rng([seed, _VALIDATION]).normal(0.0, config.difficulty_std, n_val)
    unreachable = None
    if config.beyond_reach or config.wrong_reference:
        unreachable = np.zeros(config.clusters, dtype=bool)
        unreachable[list(config.beyond_reach) + list(config.wrong_reference)] = True
    return Task(cluster=cluster, difficulty=difficulty, skill0=skill0, n_train=n_train,
                validation_cluster=np.arange(n_val) % config.clusters, validation_difficulty=validation_difficulty,
                unreachable=unreachable)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def cluster_skills_from_pass_rates(pass_rates, clip: float = 1e-3) -> tuple[float, ...]:
    """Initial cluster skills whose pass rate (at difficulty 0) is ``pass_rates[c]``: ``logit(p)``,
    with p clipped to ``[clip, 1 - clip]`` because a rate of exactly 0 or 1 has no finite logit
    (1e-3: a prompt then succeeds 16/16 with probability 0.98, as the solved families do).

    >>> [round(s, 2) for s in cluster_skills_from_pass_rates([0.5, 1.0, 0.1])]
    [0.0, 6.91, -2.2]
    """
    p = np.asarray(pass_rates, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not ((p >= 0) & (p <= 1)).all():
        raise ValueError(f"pass rates must be a non-empty list of numbers in [0, 1], got {pass_rates!r}")
    if not 0 < clip < 0.5:
        raise ValueError(f"clip must lie in (0, 0.5), got {clip}")
    p = np.clip(p, clip, 1.0 - clip)
    return tuple(float(x) for x in np.log(p / (1.0 - p)))


@dataclass
class Learner:
    """Skills of the simulated policy: ``z = skill[cluster] + own - difficulty``."""

    task: Task
    config: SimConfig
    skill: np.ndarray = field(init=False)
    own: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.skill = self.task.skill0.astype(np.float64).copy()
        self.own = np.zeros(self.task.difficulty.shape[0])

    def pass_rates(self, idx: np.ndarray | slice = slice(None)) -> np.ndarray:
        t = self.task
        return t.reward_rates(self.skill[t.cluster[idx]] + self.own[idx] - t.difficulty[idx], t.cluster[idx])

    def validation_pass_rates(self) -> np.ndarray:
        """``[V]`` pass rates of the validation prompts (never trained on: cluster skill only)."""
        t = self.task
        return t.reward_rates(self.skill[t.validation_cluster] - t.validation_difficulty, t.validation_cluster)

    def step(self, prompts: np.ndarray, signal: np.ndarray) -> None:
        """Move the logit of ``prompts[k]`` by ``lr * signal[k]`` (``transfer`` of it via the cluster)."""
        delta = self.config.lr * signal
        rho = self.config.transfer
        self.own[prompts] += (1.0 - rho) * delta
        self.skill += rho * np.bincount(self.task.cluster[prompts], weights=delta, minlength=self.skill.size)


def grpo_signal(advantages: np.ndarray, rewards: np.ndarray, slot: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``[M]`` gradient of the token-mean loss on each prompt's logit: ``(1/N) sum_j A_j (y_j - p)``."""
    return np.bincount(slot, weights=advantages * (rewards - p[slot]), minlength=p.size) / rewards.size


def gradient_noise(advantages: np.ndarray) -> float:
    """Second moment per parameter of the step's gradient noise, up to a constant: ``(1/N^2) sum_j A_j^2``."""
    return float(advantages @ advantages) / advantages.size**2


@dataclass
class AdamScale:
    """Adam's per-step scale ``1 / sqrt(v_hat)`` for a noise-dominated gradient (see the module docstring)."""

    beta2: float = 0.999  # AdamW's default, as in TRL and verl
    second_moment: float = 0.0
    steps: int = 0

    def __call__(self, noise: float) -> float:
        self.steps += 1
        self.second_moment = self.beta2 * self.second_moment + (1.0 - self.beta2) * noise
        v_hat = self.second_moment / (1.0 - self.beta2**self.steps)
        return 0.0 if v_hat <= 0.0 else 1.0 / float(np.sqrt(v_hat))  # no mixed group yet: no signal either


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
    """Train the simulated policy for ``options.steps`` steps with one allocator (or until it generated
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
        """Run the policy's step on the simulated policy; returns the step, the draws and the pass
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
        trained = group_advantages(rewards, ids if result.kept.groups is None else result.kept.group_keys(result.group_ids))
        if result.kept.baselines is None:
            adv = trained.advantages
        else:
            adv = baseline_advantages(rewards, ids, result.kept.baselines, scale_by_std=result.kept.scale_by_std)
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
