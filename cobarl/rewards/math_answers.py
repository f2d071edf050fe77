"""The answer logic of the math reward: extract the final answer, compare it symbolically with the
ground truth (math-verify), in the calling thread and with no time bound.

Extraction, in order: the text after the last ``</think>``; a ``\\boxed{...}`` (every box counts,
so a hedged "\\boxed{7} ... \\boxed{8}" reads as the set {7, 8}); a DAPO-style last
``Answer: ...`` line; otherwise math-verify's own LaTeX/expression search. The time bound and the
worker processes are `cobarl.rewards.math_pool`'s; `cobarl.rewards.math.math_reward` joins them.
"""

from __future__ import annotations

import numbers
import re
from functools import lru_cache

_THINK_END = "</think>"
_ANSWER_LINE = re.compile(r"^\s*[*_#]*\s*(?:final\s+)?answer\s*[:：][*_]*\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def _answer_region(completion: str) -> str:
    """What to extract from: after ``</think>``; a last ``Answer: x`` line becomes ``\\boxed{x}``."""
    text = completion.rsplit(_THINK_END, 1)[-1]
    if "\\boxed" in text or "\\fbox" in text:
        return text
    lines = _ANSWER_LINE.findall(text)
    if lines:
        value = lines[-1].strip().rstrip(".").strip()
        if len(value) >= 2 and value[0] == value[-1] == "$":
            value = value[1:-1]
        return f"\\boxed{{{value}}}"
    return text


@lru_cache(maxsize=8192)
def _parse_gold(answer: str) -> tuple:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = answer.strip()
    if len(text) >= 2 and text[0] == text[-1] == "$" and text[-2] != "\\":
        text = text[1:-1]
    if "\\boxed" not in text:
        text = f"\\boxed{{{text}}}"
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    return tuple(parse(text, extraction_config=configs, parsing_timeout=None))


def _normalise(text: str) -> str:
    return re.sub(r"\s+|\\[,;!: ]|\\left|\\right|^\$|\$$", "", text).rstrip(".")


def verify_inline(completion: str, answer: str) -> float:
    """The comparison, in this thread, with no time bound (math-verify timeouts off): use `math_reward`."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    region = _answer_region(completion)
    gold = list(_parse_gold(answer))
    if not gold:  # an answer math-verify cannot read: fall back to comparing the text
        from cobarl.answers import last_boxed

        boxed = last_boxed(region)
        return float(boxed is not None and _normalise(boxed) == _normalise(answer))
    pred = parse(
        region,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        extraction_mode="first_match",
        parsing_timeout=None,
    )
    return float(bool(verify(gold, pred, timeout_seconds=None)))


def quiet_math_verify() -> None:
    import logging

    # "Timeout is disabled ..." is expected here: the parent bounds the time.
    for name in ("math_verify", "math_verify.parser", "math_verify.grader", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def invalid_input(completion: object, answer: object) -> str | None:
    """Why this pair cannot be checked, or None. Numbers are fine answers (parquet columns hold ints)."""
    if not isinstance(completion, str):
        return f"completion is {type(completion).__name__}, not str"
    if isinstance(answer, bool) or not isinstance(answer, (str, numbers.Real)):
        return f"answer is {type(answer).__name__}, not str or a number"
    return None


def same_single_box(completion: str, answer: str) -> bool:
    """Fast path, no worker: the answer region has one box and it holds the very text of the answer."""
    from cobarl.answers import last_boxed

    region = completion.rsplit(_THINK_END, 1)[-1]
    if region.count("\\boxed{") + region.count("\\fbox{") != 1:
        return False
    boxed = last_boxed(region)
    return boxed is not None and boxed.strip() == answer.strip()
