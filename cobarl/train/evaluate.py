"""The held-out evaluator of `cobarl train` (and of `cobarl probe`): fresh samples through the project's
one generation loop, scored by the verifier; greedy and sampled held-out accuracy, validation
accuracy, and the difficulty buckets of train prompts."""

from __future__ import annotations

import numpy as np

from cobarl import metrics as M
from cobarl.stats import difficulty_buckets, success_rule
from cobarl.train.config import TrainConfig


EVAL_CHECK_AFTER = 16
"""Scored calls after which an evaluation stops early when its verifier fails at the failure limit."""


def failure_count(verifier) -> int:
    return int(getattr(verifier, "failure_count", 0))


def sample_scores(model, tokenizer, dataset, verifier, *, max_new_tokens: int, batch_size: int = 128,
                  temperature: float = 0.0, num_samples: int = 1, seed: int = 0,
                  failure_limit: float = 1.0) -> np.ndarray:
    """``[prompts, num_samples]`` verifier scores of fresh samples (greedy when ``temperature == 0``).

    Generates through the project's one loop (`cobarl.models.generate.HFGenerator`), with prompts
    rendered and tokenized as TRL renders them for training (chat template for chat prompts, no
    added special tokens), and T = ``temperature`` with no top-k / top-p cut, as the rollouts are.
    Stops with a RuntimeError once ``failure_limit`` (a share, as ``--reward-failure-limit``; 1: never)
    of the verifier's calls failed, checked from `EVAL_CHECK_AFTER` calls on, so a broken verifier
    does not cost a whole evaluation of timeouts.
    """
    from cobarl.models.generate import HFGenerator
    from cobarl.train.rewards import exceeds_failure_limit

    texts = [p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
             for p in dataset["prompt"]]
    generator = HFGenerator(model, tokenizer, batch_size=batch_size, add_special_tokens=False)
    samples = generator.generate(texts, n=num_samples, temperature=temperature, top_p=1.0,
                                 max_tokens=max_new_tokens, seed=seed)
    start, total, rows = failure_count(verifier), len(texts) * num_samples, []
    for cs, a in zip(samples, dataset["answer"]):
        rows.append([float(verifier(c, a)) for c in cs])
        calls, failed = len(rows) * num_samples, failure_count(verifier) - start
        if calls >= min(total, EVAL_CHECK_AFTER) and exceeds_failure_limit(failed, calls, failure_limit):
            detail = getattr(verifier, "last_failure", "")
            raise RuntimeError(
                f"evaluation stopped: the reward failed on {failed} of its first {calls} calls (>= reward_failure_limit "
                f"{failure_limit:g}), so the accuracy would be meaningless" + (f"; last failure: {detail}" if detail else "")
                + ". Fix the verifier (or raise --reward-timeout) and run again.")
    return np.array(rows, dtype=float).reshape(len(texts), num_samples)


TRANSITION_SAMPLES = 16
"""Samples per train prompt for its difficulty bucket (CoBA-RL Fig. 7 uses avg@16)."""


def train_buckets(model, tokenizer, dataset, verifier, config: TrainConfig) -> list[int]:
    """Difficulty bucket (`cobarl.stats.BUCKETS`) of every train prompt: successes, under the run's
    success rule (an allocator's, else reward == 1), among `TRANSITION_SAMPLES` samples at the training temperature."""
    scores = sample_scores(model, tokenizer, dataset, verifier, max_new_tokens=config.max_completion_length,
                           temperature=config.temperature, num_samples=TRANSITION_SAMPLES, seed=config.seed)
    # an allocator's own success rule; the other policies' statistics count a reward of 1, as both papers' code
    success = success_rule(getattr(config.strategy.options, "success", "==1"))
    return difficulty_buckets(success(scores).sum(axis=1), TRANSITION_SAMPLES).tolist()


def held_out_accuracy(model, tokenizer, dataset, verifier, *, max_new_tokens: int, batch_size: int = 128,
                      temperature: float = 0.0, num_samples: int = 1, seed: int = 0,
                      failure_limit: float = 1.0) -> dict[str, float]:
    """Mean verifier score on ``dataset`` (greedy when ``temperature == 0``), overall and per difficulty."""
    scores = sample_scores(model, tokenizer, dataset, verifier, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           temperature=temperature, num_samples=num_samples, seed=seed,
                           failure_limit=failure_limit).mean(axis=1).tolist()
    result = {"accuracy": float(np.mean(scores)) if scores else 0.0}
    if "difficulty" in dataset.column_names:
        levels = dataset["difficulty"]
        for level in sorted(set(levels)):
            result[f"accuracy/level_{level}"] = float(np.mean([s for s, lv in zip(scores, levels) if lv == level]))
    return result


class RunEvaluator:
    """The held-out evaluations of one run (before RL, every --eval-every steps, after RL), counting
    the reward calls they make and those that failed (``failures``, ``calls``)."""

    def __init__(self, config: TrainConfig, tokenizer, eval_ds, verifier) -> None:
        self.config, self.tokenizer, self.eval_ds, self.verifier = config, tokenizer, eval_ds, verifier
        self.failures = self.calls = 0

    def __call__(self, model) -> dict[str, float]:
        """Held-out greedy accuracy (overall and per level) and sampled avg@8, under the schema's names;
        failed reward calls are counted and stop it at --reward-failure-limit."""
        config, tokenizer, eval_ds, verifier = self.config, self.tokenizer, self.eval_ds, self.verifier
        kw = dict(max_new_tokens=config.max_completion_length, seed=config.seed, failure_limit=config.reward_failure_limit)
        failed_before = failure_count(verifier)
        greedy = held_out_accuracy(model, tokenizer, eval_ds, verifier, **kw)
        out = {k.replace("accuracy", M.EVAL_HELDOUT_GREEDY, 1): v for k, v in greedy.items()}
        out[M.EVAL_HELDOUT_ACCURACY] = held_out_accuracy(model, tokenizer, eval_ds, verifier, temperature=config.temperature,
                                                         num_samples=8, **kw)["accuracy"]
        self.failures += failure_count(verifier) - failed_before
        self.calls += 9 * len(eval_ds)
        return out

    def counts(self) -> dict[str, int]:
        """The reward calls made and failed so far (saved in each checkpoint)."""
        return {"calls": self.calls, "failures": self.failures}

    def restore(self, counts: dict | None) -> None:
        """Continue from a checkpoint's `counts` (None: a checkpoint written before they were saved)."""
        if counts:
            self.calls, self.failures = int(counts["calls"]), int(counts["failures"])

    def validation(self, model, val_ds) -> float:
        """Sampled avg@8 on the validation split: for choosing settings, never the number a comparison reports."""
        config = self.config
        failed_before = failure_count(self.verifier)
        accuracy = held_out_accuracy(
            model, self.tokenizer, val_ds, self.verifier, temperature=config.temperature, num_samples=8,
            max_new_tokens=config.max_completion_length, seed=config.seed,
            failure_limit=config.reward_failure_limit)["accuracy"]
        self.failures += failure_count(self.verifier) - failed_before
        self.calls += 8 * len(val_ds)
        return accuracy
