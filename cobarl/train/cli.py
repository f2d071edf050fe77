"""`cobarl train`: the argument parser is generated from `TrainConfig`'s fields.

Precedence: field defaults < the resumed run's ``config.yaml`` (with ``--resume``) < ``--config
file.yaml`` < command-line flags. The allocator's flags (``--allocator``, ``--kappa``, ``--tau``,
``--min-budget``, ...) are generated from `cobarl.AllocatorConfig`'s fields; a flag left out keeps
the field's default (``None`` there means "the strategy's paper default").

    cobarl train                                   # embedded task + tiny model, offline, CPU
    cobarl train --max-steps 20 --allocator uniform --output-dir runs/uniform
    cobarl train --model Qwen/Qwen2.5-0.5B-Instruct --dataset dapo.parquet --reward exact
    cobarl train --resume --output-dir runs/uniform --max-steps 40
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from cobarl.train.config import (
    TrainConfig,
    allocator_fields,
    allocator_key,
    default_allocator,
    load_yaml,
    make_config,
    type_names,
)


def _number_or_text(text: str) -> float | str:
    """For fields such as tau that take a number or a keyword ('adaptive')."""
    try:
        return float(text)
    except ValueError:
        return text


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _converter(names: list[str]):
    """The argparse ``type`` for an annotation; None for types a flag cannot carry (YAML only)."""
    if "float" in names and "str" in names:
        return _number_or_text
    if "float" in names:
        return _finite_float
    if "int" in names:
        return int
    if "str" in names or "Callable" in names:
        return str
    return None


def _docstring_help(cls: type) -> dict[str, str]:
    """``name: text`` entries of a class docstring's ``Attributes:`` section (continuation lines joined),
    so the core's field documentation is the flags' help without being copied here."""
    out: dict[str, str] = {}
    lines = (cls.__doc__ or "").split("Attributes:", 1)[-1].splitlines()
    current = None
    for line in lines:
        stripped = line.strip()
        head, sep, rest = stripped.partition(":")
        if sep and head.replace(", ", ",").replace("_", "").replace(",", "").isalnum() and line.startswith(" " * 8) and not line.startswith(" " * 12):
            current = [n.strip() for n in head.split(",")]
            for n in current:
                out[n] = rest.strip()
        elif current and stripped:
            for n in current:
                out[n] += " " + stripped
    return out


def _add_flag(parser, name: str, f: dataclasses.Field, default: object, extra_flags: tuple = (), doc: str = "",
              none_means: str | None = None) -> None:
    names = type_names(f)
    flags = ["--" + name.replace("_", "-"), *extra_flags]
    default_text = none_means if default is None else default
    help_text = (f.metadata.get("help") or doc) + (f" (default: {default_text})" if default_text is not None else "")
    if "bool" in names:
        parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        return
    kind = _converter(names)
    if kind is None:
        return
    choices = f.metadata.get("choices")
    parser.add_argument(*flags, dest=name, type=kind, choices=choices, help=help_text,
                        metavar=name.upper() if choices is None else None)


def build_parser() -> argparse.ArgumentParser:
    from cobarl.train.config import ALLOCATOR_FLAG_ALIASES, ALLOCATORS

    parser = argparse.ArgumentParser(
        prog="cobarl train",
        description="GRPO with capability-oriented per-prompt rollout budgets (TRL). "
        "With no arguments: the embedded task (families-v4) and its tiny model, offline on CPU.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options (keys as below, - or _).")
    for f in dataclasses.fields(TrainConfig):
        if f.name != "allocator":
            _add_flag(parser, f.name, f, f.default, f.metadata.get("aliases", ()))
    group = parser.add_argument_group("allocator (cobarl.AllocatorConfig)")
    from cobarl.allocator import AllocatorConfig

    defaults, docs = default_allocator(), _docstring_help(AllocatorConfig)
    for f in allocator_fields():
        name = allocator_key(f)
        if name == "allocator":
            group.add_argument("--allocator", dest="allocator", choices=ALLOCATORS,
                               help=f"Budget allocator strategy (default: {defaults.strategy}).")
            continue
        _add_flag(group, name, f, getattr(defaults, f.name), ALLOCATOR_FLAG_ALIASES.get(f.name, ()), docs.get(f.name, ""),
                  none_means="the strategy's paper default")
    return parser


def config_from_args(argv: list[str] | None) -> TrainConfig:
    """Parse ``argv`` into a validated `TrainConfig` (see the module docstring for precedence)."""
    ns = vars(build_parser().parse_args(argv))
    yaml_path = ns.pop("config", None)
    from_file = load_yaml(yaml_path) if yaml_path else {}
    resuming = ns.get("resume", from_file.get("resume", False))
    base = None
    if resuming:
        from cobarl.train.run import saved_config

        base = saved_config({**from_file, **ns})
    return make_config({**from_file, **ns}, base=base)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cobarl train`` / ``python -m cobarl.train``; returns the exit status."""
    from cobarl.train.run import interrupt_hint, process_rank, resolve_run_dir, run

    is_main = process_rank()[0] == 0
    try:
        config = config_from_args(argv)
        config = config.replace(output_dir=str(resolve_run_dir(config)))
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"cobarl train: error: {e}", file=sys.stderr)
        return 2
    from cobarl.experiments.compare import Terminated, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # SIGTERM (timeout, Slurm preemption, kill) ends the run like Ctrl-C
            summary = run(config, log=lambda msg: print(msg, flush=True))
    except KeyboardInterrupt as stop:
        if is_main:
            from pathlib import Path

            what = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
            print(f"\ncobarl train: {what}. {interrupt_hint(Path(config.output_dir))}", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, ImportError) as e:
        print(f"cobarl train: error: {e}", file=sys.stderr)
        return 1
    if summary is not None:
        print(summary.text(), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
