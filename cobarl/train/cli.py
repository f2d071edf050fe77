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
from cobarl.allocator import AllocatorConfig
from cobarl.options import parse_option
from cobarl.train.config import (
    TrainConfig,
    allocator_fields,
    allocator_key,
    load_yaml,
    make_config,
)


def _text_parser(cls: type, name: str):
    """The argparse ``type`` of a field: its text read by :func:`cobarl.options.parse_option`, as
    every other front end reads it."""
    def parse(text: str):
        try:
            return parse_option(cls, name, text, text=True)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _add_flag(parser, cls: type, f: dataclasses.Field, name: str, default: object,
              none_means: str | None = None) -> None:
    flags = ["--" + name.replace("_", "-"), *f.metadata.get("aliases", ())]
    default_text = default if default is not None else None if "Default:" in f.metadata["help"] else none_means
    help_text = f.metadata["help"] + (f" (default: {default_text})" if default_text is not None else "")
    if isinstance(default, bool):
        parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        return
    choices = f.metadata.get("choices")
    parser.add_argument(*flags, dest=name, type=_text_parser(cls, f.name), choices=choices, help=help_text,
                        metavar=name.upper() if choices is None else None)


def build_parser() -> argparse.ArgumentParser:
    from cobarl.train.config import ALLOCATORS

    parser = argparse.ArgumentParser(
        prog="cobarl train",
        description="GRPO with capability-oriented per-prompt rollout budgets (TRL). "
        "With no arguments: the embedded task (families-v4) and its tiny model, offline on CPU.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options (keys as below, - or _).")
    for f in dataclasses.fields(TrainConfig):
        if not f.metadata.get("nested"):
            _add_flag(parser, TrainConfig, f, f.name, f.default)
    group = parser.add_argument_group("allocator (cobarl.AllocatorConfig)")
    defaults = AllocatorConfig()
    from cobarl.tasks.embedded import TASKS

    presets = {"max_budget": ", ".join(sorted({str(t.max_budget) for t in TASKS.values()}))}
    for f in allocator_fields():
        name = allocator_key(f)
        if name == "allocator":
            group.add_argument("--allocator", dest="allocator", choices=ALLOCATORS,
                               help=f"{f.metadata['help']} (default: {defaults.strategy})")
            continue
        default = getattr(defaults, f.name)
        if f.name in presets:  # the embedded task's preset (EmbeddedTask), applied when the flag is left out
            default = f"{default}; the embedded task: {presets[f.name]}, 4 x its 8 rollouts per prompt"
        _add_flag(group, AllocatorConfig, f, name, default, none_means="the strategy's paper default")
    return parser


def config_from_args(argv: list[str] | None) -> TrainConfig:
    """Parse ``argv`` into a validated `TrainConfig` (see the module docstring for precedence)."""
    ns = vars(build_parser().parse_args(argv))
    yaml_path = ns.pop("config", None)
    from_file = load_yaml(yaml_path) if yaml_path else {}
    resuming = ns.get("resume", from_file.get("resume", False))
    base = None
    if resuming:
        from cobarl.train.rundir import saved_config

        base = saved_config({**from_file, **ns})
    return make_config({**from_file, **ns}, base=base)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cobarl train`` / ``python -m cobarl.train``; returns the exit status."""
    from cobarl.train.run import run
    from cobarl.train.rundir import interrupt_hint, process_rank, resolve_run_dir

    is_main = process_rank()[0] == 0
    try:
        config = config_from_args(argv)
        config = config.replace(output_dir=str(resolve_run_dir(config)))
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"cobarl train: error: {e}", file=sys.stderr)
        return 2
    from cobarl.signals import Terminated, sigterm_as_interrupt

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
