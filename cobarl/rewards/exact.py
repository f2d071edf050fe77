"""Exact-match verifier for short answers such as the embedded tasks'."""

from __future__ import annotations

STOP_STRINGS: tuple[str, ...] = ("\n", "<eos>", "</s>", "<|endoftext|>", "<|im_end|>")
"""Text after the first of these is ignored: a newline or an EOS token left in by decoding."""


def exact_match_reward(completion: str, answer: str) -> float:
    """1.0 if the stripped completion's first line equals ``answer`` (both stripped), else 0.0.

    The completion is cut at the first newline or EOS string (see ``STOP_STRINGS``), so it
    works whether or not the caller decoded with ``skip_special_tokens=True``.

    >>> exact_match_reward("19<eos><pad>", "19")
    1.0
    >>> exact_match_reward(" 19\\nmore", "19")
    1.0
    >>> exact_match_reward("190", "19")
    0.0
    """
    # Strip first so leading whitespace (e.g. "\n19") is not read as an empty first line.
    completion = completion.strip()
    cut = len(completion)
    for stop in STOP_STRINGS:
        pos = completion.find(stop)
        if pos != -1:
            cut = min(cut, pos)
    return 1.0 if completion[:cut].strip() == answer.strip() else 0.0
