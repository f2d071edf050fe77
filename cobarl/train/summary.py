"""The summary stage of `cobarl train`: ``summary.json`` from ``metrics.jsonl`` and the evaluations."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cobarl import metrics as M
from cobarl.train.metrics_log import METRICS_FILE, read_metrics


@dataclass
class RunSummary:
    run_dir: str
    steps: int
    rollouts: int
    effective_ratio: float
    accuracy_before: dict[str, float]  # metric name (cobarl.metrics) -> value, before RL
    accuracy_after: dict[str, float]
    initial_heldout_accuracy: float  # eval/heldout_accuracy (sampled avg@8) before RL
    final_heldout_accuracy: float  # ... and after
    seconds: float
    seconds_per_step: float
    rollouts_per_second: float
    overhead_frac: float
    resumed_from: str | None = None
    processes: int = 1
    rollouts_per_step: int = 0
    allocations: int = 0
    reward_failures: int = 0
    reward_calls: int = 0
    # reward calls of the before/after (and --eval-every) evaluations that failed (scored 0) / were made
    eval_reward_failures: int = 0
    eval_reward_calls: int = 0
    # [5][5] train prompts by difficulty bucket before (row) and after (column) RL (--transitions)
    transitions: list[list[int]] | None = None
    # Fair accounting (`rollouts` above is what the run GENERATED): trained rollouts, completion tokens
    # generated, generation calls per step and prompts consumed, summed over the run.
    strategy: str = ""
    rollouts_trained: int = 0
    completion_tokens: int = 0
    rounds_per_step: float = 0.0
    prompts: int = 0

    def text(self) -> str:
        b, a, nan = self.accuracy_before, self.accuracy_after, float("nan")
        lines = [
            f"held-out accuracy (greedy): {b.get(M.EVAL_HELDOUT_GREEDY, nan):.3f} -> {a.get(M.EVAL_HELDOUT_GREEDY, nan):.3f}",
            f"held-out accuracy (sampled, T=1, avg@8): {self.initial_heldout_accuracy:.3f} -> {self.final_heldout_accuracy:.3f}",
        ]
        lines += [
            f"steps: {self.steps}   strategy {self.strategy}: {self.allocations} x {self.rollouts_per_step} rollouts trained "
            f"across {self.processes} process(es)   mean effective ratio: {self.effective_ratio:.3f}",
            f"spent: {self.rollouts} rollouts generated ({self.rollouts_trained} trained), {self.completion_tokens} "
            f"completion tokens, {self.rounds_per_step:.2f} generation rounds per step, {self.prompts} prompts consumed",
            f"time: {self.seconds:.0f}s   {self.seconds_per_step:.2f} s/step   {self.rollouts_per_second:.0f} rollouts/s   "
            f"allocation overhead: {100 * self.overhead_frac:.2f}% of step time",
        ]
        if self.reward_failures:
            lines.append(f"WARNING: {self.reward_failures} of {self.reward_calls} reward calls failed (scored 0); "
                         "see reward/failures in metrics.jsonl")
        if self.eval_reward_failures:
            lines.append(f"WARNING: {self.eval_reward_failures} of {self.eval_reward_calls} reward calls of the held-out "
                         "evaluations failed (scored 0): the accuracies above are lower bounds")
        lines.append(f"run directory: {self.run_dir}")
        return "\n".join(lines)


def summarise_run(config, run_dir: Path, steps: int, before, after, started: float, checkpoint, world: int) -> RunSummary:
    rows = read_metrics(run_dir / METRICS_FILE)
    generations = [r for r in rows if r.get(M.ROLLOUT_COUNT)]  # with num_iterations > 1 only some steps generate
    step_s = [r.get(M.PERF_STEP_S) or 0.0 for r in rows]
    rollouts = int(sum(r[M.ROLLOUT_COUNT] for r in generations))
    failures = int(sum(r.get(M.REWARD_FAILURES) or 0 for r in generations))
    return RunSummary(
        run_dir=str(run_dir),
        steps=steps,
        rollouts=rollouts,
        effective_ratio=sum(r.get(M.ROLLOUT_EFFECTIVE_RATIO) or 0.0 for r in generations) / max(len(generations), 1),
        accuracy_before=before,
        accuracy_after=after,
        initial_heldout_accuracy=before[M.EVAL_HELDOUT_ACCURACY],
        final_heldout_accuracy=after[M.EVAL_HELDOUT_ACCURACY],
        seconds=time.perf_counter() - started,
        seconds_per_step=sum(step_s) / max(len(rows), 1),
        rollouts_per_second=rollouts / max(sum(step_s), 1e-9),
        overhead_frac=sum(r.get(M.PERF_OVERHEAD_FRAC) or 0.0 for r in rows) / max(len(rows), 1),
        resumed_from=str(checkpoint) if checkpoint is not None else None,
        processes=world,
        rollouts_per_step=config.rollouts_per_step,
        allocations=len(generations),
        reward_failures=failures,
        reward_calls=rollouts,
        strategy=config.strategy_name,
        rollouts_trained=int(sum(r.get(M.ROLLOUT_TRAINED) or 0 for r in generations)),
        completion_tokens=int(sum(r.get(M.ROLLOUT_TOKENS) or 0 for r in generations)),
        rounds_per_step=sum(r.get(M.ROLLOUT_ROUNDS) or 0 for r in generations) / max(len(generations), 1),
        prompts=int(sum(r.get(M.ROLLOUT_PROMPTS) or 0 for r in generations)),
    )
