"""What ``cobarl compare`` prints on stderr about a finished comparison: one line per arm."""

from __future__ import annotations

import sys
from typing import Any

from cobarl.experiments.simulation import sim_trust
from cobarl.experiments.report.markdown import accuracy_shown, arm_budget


def print_table(summary: dict[str, Any]) -> None:
    """Each arm's held-out accuracy and effective ratio; where a simulated summary withholds accuracy
    (`sim_trust`), its budget per step, effective ratio and rollouts generated instead."""
    shown = accuracy_shown(summary)
    if sim_trust.warns(summary["backend"], shown):
        print(sim_trust.warning_text(), file=sys.stderr)
    for label, e in summary["strategies"].items():
        acc, eff, made = e["final_heldout_accuracy"], e["effective_ratio"], e["rollouts"]
        if eff["mean"] is None:  # no finished run
            continue
        ratio = f"effective ratio {eff['mean']:.3f} ± {eff['half_width'] or 0:.3f}"
        if not shown:
            print(f"  {label:24s} budget {arm_budget(summary, label):g}/step   {ratio}   "
                  f"rollouts generated {made['mean']:,.0f}", file=sys.stderr)
        elif acc["mean"] is not None:
            print(f"  {label:24s} held-out acc {acc['mean']:.4f} ± {acc['half_width'] or 0:.4f}   {ratio}",
                  file=sys.stderr)
    if not shown:
        print("  (simulated accuracy left out: not a prediction of real training; report.md says why, "
              f"{sim_trust.SIM_ACCURACY_FLAG} shows it)", file=sys.stderr)
