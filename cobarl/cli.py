"""``cobarl``: one entry point; each subcommand owns its own parser.

    cobarl train     GRPO with adaptive per-prompt budgets on TRL (embedded CPU default)
    cobarl compare   strategies side by side (simulated or real back-end) -> report
    cobarl probe     is the task allocation-sensitive? (fixed 3:1 allocation vs a placebo)
    cobarl eval      avg@k / pass@k on math benchmarks
    cobarl diagnose  which world a model and its data are in (reachable share of 0/k prompts, regime map)
    cobarl bench     measure the allocation solvers
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("cobarl.train.cli", "GRPO with adaptive per-prompt budgets on TRL (no arguments: embedded CPU demo)"),
    "compare": ("cobarl.experiments.comparison.cli", "run allocation strategies side by side and write a report"),
    "probe": ("cobarl.experiments.comparison.probe", "check that where the rollouts go matters on a task (strategy-neutral)"),
    "eval": ("cobarl.evaluate.cli", "avg@k and pass@k of a model on math benchmarks"),
    "diagnose": ("cobarl.diagnose.cli", "pass rates at k samples, reachable share of 0/k prompts, nearest regime"),
    "bench": ("cobarl.bench", "benchmark the allocation solvers (threshold vs heap vs DP)"),
}


def _usage() -> str:
    lines = ["usage: cobarl COMMAND [options]   (cobarl COMMAND --help for options)", "", "commands:"]
    lines += [f"  {name:9} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from cobarl import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"cobarl: unknown command {name!r}; valid: {', '.join(COMMANDS)}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
