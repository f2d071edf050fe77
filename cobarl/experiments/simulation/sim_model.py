"""The simulated task and model, and the model's learning rule (the maths is stated once, in
`cobarl.experiments.simulation.simulator`, which runs them step by step):

* `SimConfig`, `Task`, `make_task`: the task (clusters, difficulties, starting skills, the regime's
  unreachable clusters) and its three splits;
* `Learner`: the simulated model, its logits ``z = skill[cluster] + own - difficulty`` and one step on them;
* `grpo_signal`, `gradient_noise`, `AdamScale`: what a step moves a logit by.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Stream tags for np.random.default_rng([seed, tag, ...]); fixed so that runs are reproducible.
_TASK, _VALIDATION = 11, 15  # 12, 14: the simulator (prompt order, evaluation); 13, 16: rollouts (sim_rollouts)


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
    """Skills of the simulated model: ``z = skill[cluster] + own - difficulty``."""

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
