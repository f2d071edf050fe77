"""A 0/1 reward for verl (``reward.custom_reward_function``): verl's own rule for the row's ``data_source``,
read as correct = 1, wrong = 0. For DAPO-Math-17K (``math_dapo``, which scores +1/-1) this is the reward
Reinforce-Ada's public code trains with, and what its default pool baseline (``pool_baseline: counts``)
needs; ``acc`` stays in the reward's extra info."""

from verl.utils.reward_score import default_compute_score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    result = default_compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    correct = bool(result["acc"]) if isinstance(result, dict) else float(result) > 0
    return {**(result if isinstance(result, dict) else {}), "score": float(correct), "acc": float(correct)}
