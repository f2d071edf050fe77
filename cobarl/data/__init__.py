"""Datasets: math problems from local files or the hub, mapped to one record type (`MathProblem`)."""

from cobarl.data.math import (
    LAYOUTS,
    MathProblem,
    embedded_problems,
    load_math,
    rows_to_problems,
    to_dataset,
)
from cobarl.data.prompts import TEMPLATES, chat_messages, format_prompt, instruction_text
from cobarl.data.sources import BENCHMARKS, hub_available

__all__ = [
    "BENCHMARKS",
    "LAYOUTS",
    "TEMPLATES",
    "MathProblem",
    "embedded_problems",
    "chat_messages",
    "format_prompt",
    "hub_available",
    "instruction_text",
    "load_math",
    "rows_to_problems",
    "to_dataset",
]
