"""Prompts from problems: the instruction templates and the chat messages a model is asked with.

Text in, text out; `cobarl.data.math` uses them to build the training dataset's ``prompt`` column
and to strip DAPO's own instruction from its prompts.
"""

from __future__ import annotations

from typing import Any

DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""The instruction of Qwen2.5-Math / DeepSeek-R1 style evaluations (answer in ``\\boxed{}``)."""

TEMPLATES = ("raw", "boxed", "dapo", "as-is")
"""``raw``: the problem as is; ``boxed``: problem + `BOXED_INSTRUCTION`; ``dapo``: DAPO's "Answer:" wrapper;
``as-is``: the file's own ``prompt`` field unchanged (a string or a chat list; training on verl/DAPO files)."""


def instruction_text(problem: str, template: str = "boxed") -> str:
    """The user message for ``problem`` under ``template`` (one of ``TEMPLATES``).

    >>> instruction_text("1+1?", "boxed")
    '1+1?\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'
    """
    if template == "raw":
        return problem
    if template == "boxed":
        return f"{problem}\n{BOXED_INSTRUCTION}"
    if template == "dapo":
        return f"{DAPO_PREFIX}{problem}{DAPO_SUFFIX}"
    raise ValueError(f"unknown prompt template {template!r}; valid: {', '.join(TEMPLATES)}")


def chat_messages(problem: str, template: str = "boxed", *, system: str | None = None) -> list[dict[str, str]]:
    """``[{"role": "system", ...}?, {"role": "user", ...}]`` for ``problem`` under ``template``."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": instruction_text(problem, template)}]


def format_prompt(problem: str, template: str = "boxed", *, tokenizer: Any = None, system: str | None = None) -> str:
    """Generation-ready text: the tokenizer's chat template when it has one, else the plain instruction.

    With a chat template this is ``apply_chat_template(chat_messages(...), add_generation_prompt=True)``;
    without one (e.g. the embedded tiny model) the system message, if any, is prepended as a line.
    """
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(chat_messages(problem, template, system=system), tokenize=False,
                                             add_generation_prompt=True)
    text = instruction_text(problem, template)
    return f"{system}\n{text}" if system else text
