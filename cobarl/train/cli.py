"""`cobarl train`: the argument parser is generated from `TrainConfig`'s fields.

Precedence: field defaults < the resumed run's ``config.yaml`` (with ``--resume``) < ``--config
file.yaml`` < command-line flags. ``--strategy`` (``--allocator`` is its old name) picks the
strategy; the flags of its options (``--kappa``, ``--max-rounds``, ``--p-easy``, ...) are generated
from every rollout policy's options, a group per policy; a flag left out keeps the strategy's value,
and a flag of another policy's option is refused by name.

    cobarl train                                   # embedded task + tiny model, offline, CPU
    cobarl train --max-steps 20 --strategy uniform --output-dir runs/uniform
    cobarl train --model Qwen/Qwen2.5-0.5B-Instruct --dataset dapo.parquet --reward exact
    cobarl train --resume --output-dir runs/uniform --max-steps 40
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from cobarl.options import parse_option
from cobarl.train.config import TrainConfig, make_config
from cobarl.train.config_files import load_yaml


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
              none_means: str | None = None, old_names: tuple[str, ...] = (), strategy_option: bool = False) -> None:
    """Add the flag of field ``f`` (dest ``name``), and one more, hidden from --help, per old name it had."""
    flags = ["--" + name.replace("_", "-"), *f.metadata.get("aliases", ())]
    if default is None and "fallback" in f.metadata:  # a conditional option: its value where it applies
        default = f.metadata["fallback"]
    default_text = default if default is not None else None if "default:" in f.metadata["help"].lower() else none_means
    help_text = f.metadata["help"] + (f" (default: {default_text})" if default_text is not None else "")
    if isinstance(default, bool) and not strategy_option:  # a train option: --x / --no-x
        parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        return
    if isinstance(default, bool):  # a strategy option: --x, or --x true/false as compare specs and verl write it
        kwargs = {"nargs": "?", "const": True, "metavar": "true|false"}
    else:
        choices = f.metadata.get("choices")
        kwargs = {"choices": choices, "metavar": name.upper() if choices is None else None}
    parser.add_argument(*flags, dest=name, type=_text_parser(cls, f.name), help=help_text, **kwargs)
    for old in old_names:
        parser.add_argument("--" + old.replace("_", "-"), dest=name, type=_text_parser(cls, f.name),
                            help=argparse.SUPPRESS, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cobarl train",
        description="GRPO with per-prompt rollout budgets (TRL): pick a strategy, and cobarl spends each step's "
        "rollouts by its rollout policy. With no arguments: the embedded task (families-v4) and its tiny model, "
        "offline on CPU, with coba.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options (keys as below, - or _).")
    for f in dataclasses.fields(TrainConfig):
        if not f.metadata.get("nested"):
            _add_flag(parser, TrainConfig, f, f.name, f.default)
    add_strategy_flags(parser)
    return parser


def add_strategy_flags(parser: argparse.ArgumentParser) -> None:
    """``--strategy`` and a group of flags per rollout policy, from its options (an option two policies
    share, one declaration, is listed once, under the first)."""
    from cobarl.policies import POLICIES
    from cobarl.strategies import STRATEGIES
    from cobarl.strategies import RENAMED_OPTIONS
    from cobarl.tasks.embedded import TASKS
    from cobarl.train.config import DEFAULT_STRATEGY

    lines = "; ".join(f"{name}: {s.summary}" for name, s in STRATEGIES.items())
    parser.add_argument("--strategy", "--allocator", dest="strategy", choices=list(STRATEGIES), metavar="STRATEGY",
                        help=f"How each step spends its rollouts (--allocator is its old name). {lines}. "
                        f"(default: {DEFAULT_STRATEGY})")
    presets = {"max_budget": ", ".join(sorted({str(t.max_budget) for t in TASKS.values()}))}
    seen: set[str] = set()
    for name, cls in POLICIES.items():
        strategies = ", ".join(s for s, rec in STRATEGIES.items() if rec.policy == name)
        group = parser.add_argument_group(f"{name} options (strategies: {strategies})")
        for f in dataclasses.fields(cls.Options):
            if f.name in seen or f.metadata.get("derived"):
                continue
            seen.add(f.name)
            default = f.default
            if f.name in presets:  # the embedded task's preset (EmbeddedTask), applied when the flag is left out
                default = f"{default}; the embedded task: {presets[f.name]}, 4 x its 8 rollouts per prompt"
            old = tuple(o for o, new in RENAMED_OPTIONS.items() if new == f.name)  # still read, not shown
            _add_flag(group, cls.Options, f, f.name, default, none_means="the strategy's own", old_names=old,
                      strategy_option=True)


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
