"""The metric schema: every metric name cobarl logs, defined once with its meaning and timing.

The simulator, the TRL trainer, the verl plugin and the report all log and read these names, so a
name means the same thing in every back-end. "Step t" is one allocation: plan with the capability
of the steps before t, roll out, observe.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    meaning: str


SCHEMA: dict[str, Metric] = {}


def _metric(name: str, meaning: str) -> str:
    SCHEMA[name] = Metric(name, meaning)
    return name


# --- budget: the plan of step t --------------------------------------------------------------------
BUDGET_MIN = _metric("budget/min", "smallest per-prompt budget in step t's plan")
BUDGET_MAX = _metric("budget/max", "largest per-prompt budget in step t's plan")
BUDGET_MEAN = _metric("budget/mean", "mean per-prompt budget in step t's plan")
BUDGET_STD = _metric("budget/std", "standard deviation of the per-prompt budgets in step t's plan")
BUDGET_P10 = _metric("budget/p10", "10th percentile of step t's per-prompt budgets")
BUDGET_P50 = _metric("budget/p50", "median of step t's per-prompt budgets")
BUDGET_P90 = _metric("budget/p90", "90th percentile of step t's per-prompt budgets")
BUDGET_NUM_PROMPTS = _metric("budget/num_prompts", "prompts in step t's plan")
BUDGET_TOTAL = _metric("budget/total", "rollouts planned for step t (all processes)")
BUDGET_OBJECTIVE = _metric("budget/objective", "value of step t's plan under the strategy's value function")

# --- capability: what step t's plan used, and what step t measured ---------------------------------
CAPABILITY_ALPHA = _metric("capability/alpha", "alpha of the Beta preference step t's plan used (from steps < t)")
CAPABILITY_BETA = _metric("capability/beta", "beta of the Beta preference step t's plan used (from steps < t)")
CAPABILITY_FAILURE_RATE = _metric(
    "capability/failure_rate", "F_t: 1 - unweighted mean over step t's prompts of their success rate in step t"
)
CAPABILITY_FAILURE_RATE_WINDOW = _metric(
    "capability/failure_rate_window", "F-bar_t: mean of F over the last `window` steps, t included (drives step t+1)"
)
CAPABILITY_F_TILDE = _metric("capability/f_tilde", "Psi(F-bar_t), the sharpened failure rate that sets step t+1's alpha")
CAPABILITY_GLOBAL_PASS_RATE = _metric(
    "capability/global_pass_rate", "success rate over every rollout observed up to and including step t"
)

# --- rollouts and rewards of step t -----------------------------------------------------------------
ROLLOUT_COUNT = _metric("rollout/count", "rollouts generated in step t (all processes)")
ROLLOUT_EFFECTIVE_RATIO = _metric(
    "rollout/effective_ratio", "share of step t's trained rollouts in groups with both outcomes (a non-zero GRPO "
    "gradient); rollout/trained over rollout/count says what the rest of the generation bought"
)
ROLLOUT_MIXED_GROUPS = _metric("rollout/mixed_groups", "share of step t's trained groups with both outcomes")
ROLLOUT_GROUPS = _metric("rollout/groups", "groups (prompts) rolled out in step t")
ROLLOUT_DEGENERATE_GROUPS = _metric(
    "rollout/degenerate_groups", "groups of step t with one rollout or all rewards equal (advantage 0)"
)
ROLLOUT_TRAINED = _metric(
    "rollout/trained", "rollouts of step t that enter the loss (below rollout/count for policies that generate more "
    "than they train on: Reinforce-Ada, DAPO, PODS, GRESO)"
)
ROLLOUT_ROUNDS = _metric("rollout/rounds", "generation calls in step t (1 unless the policy samples in rounds)")
ROLLOUT_PROMPTS = _metric("rollout/prompts", "distinct prompts rolled out in step t (the data consumed)")
ROLLOUT_TOKENS = _metric("rollout/completion_tokens", "completion tokens generated in step t (all processes)")
ROLLOUT_SKIPPED = _metric("rollout/skipped", "prompts drawn in step t and skipped before generation (GRESO)")
ROLLOUT_UNFINISHED = _metric(
    "rollout/unfinished", "prompts of step t that never met the policy's exit rule in its rounds (Reinforce-Ada)"
)
ROLLOUT_UNPLANNED = _metric("rollout/unplanned", "rollouts of step t whose prompt had no plan (verl refills; should be 0)")
REWARD_MEAN = _metric("reward/mean", "mean reward of step t's rollouts")
REWARD_STD = _metric("reward/std", "standard deviation of step t's rewards")
REWARD_FAILURES = _metric("reward/failures", "reward-function calls that failed (raised, timed out, not finite) in step t")
REWARD_FAILURE_FRAC = _metric("reward/failure_frac", "share of step t's reward calls that failed")

# --- evaluation after step t --------------------------------------------------------------------------
EVAL_HELDOUT_ACCURACY = _metric(
    "eval/heldout_accuracy",
    "held-out accuracy after step t: sampled accuracy averaged over k samples (real back-end) or the "
    "expected pass rate (simulator)",
)
EVAL_VALIDATION_ACCURACY = _metric(
    "eval/validation_accuracy",
    "accuracy after step t on the validation split: prompts disjoint from the train and held-out splits, "
    "used only to choose settings (cobarl compare --grid selects on it, never on held-out); the expected "
    "pass rate, as for held-out (simulator), or sampled avg@8 after the last step (cobarl train "
    "--validation-size)",
)
EVAL_HELDOUT_GREEDY = _metric("eval/heldout_greedy_accuracy", "held-out accuracy of greedy decoding after step t")
EVAL_TRAIN_ACCURACY = _metric("eval/train_accuracy", "mean pass rate over the training prompts after step t (simulator)")
EVAL_TRAIN_SOLVED = _metric("eval/train_solved", "share of training prompts with pass rate > 0.5 after step t (simulator)")

EVAL_PREFIX = "eval/"
"""Prefix of ``cobarl evaluate``'s per-benchmark results: ``eval/<benchmark>/<avg@k | pass@k>``."""

# --- cost ---------------------------------------------------------------------------------------------
PERF_ALLOCATE_S = _metric("perf/allocate_s", "seconds spent planning step t")
PERF_STEP_S = _metric("perf/step_s", "wall seconds of step t")
PERF_ROLLOUTS_PER_S = _metric("perf/rollouts_per_s", "rollouts generated per wall second in step t")
PERF_OVERHEAD_S = _metric("perf/overhead_s", "seconds cobarl added to step t (planning, statistics, broadcast)")
PERF_OVERHEAD_FRAC = _metric("perf/overhead_frac", "perf/overhead_s over perf/step_s")

# Keys every run summary (summary.json) carries, so reports never guess what "initial" meant.
SUMMARY_INITIAL_ACCURACY = "initial_heldout_accuracy"
SUMMARY_FINAL_ACCURACY = "final_heldout_accuracy"


def markdown_table() -> str:
    """The schema as a Markdown table (README / docs)."""
    rows = [f"| `{m.name}` | {m.meaning} |" for m in SCHEMA.values()]
    return "\n".join(["| metric | meaning |", "|---|---|", *rows])
