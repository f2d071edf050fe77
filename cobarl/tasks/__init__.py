"""Prompt sources: the embedded tasks (``embedded.TASKS``: families-v4, the default, and arith-v3)."""

from cobarl.tasks.arithmetic import (
    LEVELS,
    MAX_ANSWER_CHARS,
    Problem,
    is_eval_prompt,
    make_problems,
    make_splits,
)

__all__ = ["LEVELS", "MAX_ANSWER_CHARS", "Problem", "is_eval_prompt", "make_problems", "make_splits"]
