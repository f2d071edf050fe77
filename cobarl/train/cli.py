"""`cobarl train`: the argument parser is generated from `TrainConfig`'s fields.

Precedence: field defaults < the resumed run's ``config.yaml`` (with ``--resume``) < ``--config
file.yaml`` < command-line flags.

    cobarl train                                   # embedded task + tiny model, offline, CPU
    cobarl train --max-steps 20 --allocator uniform --output-dir runs/uniform
    cobarl train --model Qwen/Qwen2.5-0.5B-Instruct --dataset dapo.parquet --reward exact
    cobarl train --resume --output-dir runs/uniform --max-steps 40
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from cobarl.train.config import TrainConfig, load_yaml

_TYPES = {"bool": bool, "int": int, "float": float, "str": str}


def _field_type(f: dataclasses.Field) -> type:
    names = [t.strip() for t in str(f.type).split("|")]
    for name in names:
        if name in _TYPES:
            return _TYPES[name]
    raise TypeError(f"TrainConfig.{f.name}: unsupported type {f.type}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cobarl train",
        description="GRPO with capability-oriented per-prompt rollout budgets (TRL). "
        "With no arguments: the embedded arithmetic task and tiny model, offline on CPU.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options (keys as below, - or _).")
    for f in dataclasses.fields(TrainConfig):
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        help_text = f.metadata.get("help", "") + (f" (default: {f.default})" if f.default is not None else "")
        kind = _field_type(f)
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(*flags, dest=f.name, type=kind, choices=f.metadata.get("choices"), help=help_text,
                                metavar=f.name.upper() if "choices" not in f.metadata else None)
    return parser


def config_from_args(argv: list[str] | None) -> TrainConfig:
    """Parse ``argv`` into a validated `TrainConfig` (see the module docstring for precedence)."""
    ns = vars(build_parser().parse_args(argv))
    yaml_path = ns.pop("config", None)
    values: dict[str, Any] = {}
    from_file = load_yaml(yaml_path) if yaml_path else {}
    if ns.get("resume", from_file.get("resume", False)):
        from cobarl.train.run import CONFIG_FILE, resolve_run_dir

        probe = TrainConfig(**{k: v for k, v in {**from_file, **ns}.items() if k in ("output_dir", "resume")})
        saved = resolve_run_dir(probe) / CONFIG_FILE
        if saved.is_file():
            values.update(load_yaml(saved))
    values.update(from_file)
    values.update(ns)
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cobarl train`` / ``python -m cobarl.train``; returns the exit status."""
    try:
        config = config_from_args(argv)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"cobarl train: error: {e}", file=sys.stderr)
        return 2
    from cobarl.train.run import resolve_run_dir, run

    try:
        config = config.replace(output_dir=str(resolve_run_dir(config)))
    except FileNotFoundError as e:
        print(f"cobarl train: error: {e}", file=sys.stderr)
        return 2
    try:
        summary = run(config, log=lambda msg: print(msg, flush=True))
    except KeyboardInterrupt:
        print(f"\ncobarl train: interrupted; completed steps are in {config.output_dir}/metrics.jsonl. "
              f"Continue with: cobarl train --resume --output-dir {config.output_dir}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"cobarl train: error: {e}", file=sys.stderr)
        return 1
    print(summary.text(), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
