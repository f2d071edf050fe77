"""Whether the simulator's accuracy is shown as a result: one switch, set from the measured check.

The simulator (`cobarl.experiments.simulation.simulator`) was checked against real training cell by cell
(`cobarl.experiments.simulation.sim_map`: policy x task x budget, each policy's paired Δ held-out accuracy against
uniform; the bar is sign agreement >= 80 % of the cells whose real CI excludes 0 and Spearman >= 0.7).
While it fails that bar, a simulated comparison's report shows what the simulator is trusted for
(budgets, effective-gradient ratios, spending per step, transitions) and says why its accuracy is left
out; ``cobarl compare --sim-accuracy`` shows it anyway, under a warning. The real back-end is unaffected,
and so is the check itself (``--against``), whose evidence is both sides' accuracy.
"""

from __future__ import annotations

from cobarl.experiments.simulation.sim_map import SIGN_AGREEMENT_BAR, SPEARMAN_BAR

SIM_ACCURACY_IS_A_PREDICTION: bool = False
"""True once the simulator meets the bar on the real regime map (`MEASURED`); then its accuracy is shown
like the real back-end's, without a warning."""

MEASURED = {
    "sign_agreement": 0.7,  # share of the resolved cells whose simulated Δ has the real Δ's sign (21 of 30)
    "resolved_cells": 30,  # cells whose real 95 % CI excludes 0 (an arm the simulator could not run counts)
    "spearman": 0.89,  # simulated against real Δ over the cells it ran
    "cells": 36,
    # The real regime map (every policy x families-v4/u50/u90 x both budgets), mirrored cell by cell:
    # ``cobarl compare --against`` its six real comparisons (docs/benchmarks.md §3a).
    "source": "docs/results/sim-against-regime-map/map_check.json",
    "against": None,
}
"""The simulator's accuracy against real training, as measured (tests/test_sim_trust.py recomputes it from
the files named)."""

SIM_ACCURACY_FLAG = "--sim-accuracy"


def is_a_prediction(backend: str) -> bool:
    """Whether a back-end's accuracy may be read as a result: the real back-end's is measured; the
    simulator's only once the switch says it met the bar."""
    return backend != "simulated" or SIM_ACCURACY_IS_A_PREDICTION


def shows_accuracy(backend: str, opt_in: bool) -> bool:
    """Whether a comparison's report and console show its accuracy: when it is a prediction, or when
    asked for (``--sim-accuracy``)."""
    return opt_in or is_a_prediction(backend)


def warns(backend: str, shown: bool) -> bool:
    """Whether shown accuracy needs the warning that it is not a prediction (simulated, shown on request)."""
    return shown and not is_a_prediction(backend)


def _evidence() -> str:
    m = MEASURED
    agree = round(m["sign_agreement"] * m["resolved_cells"])
    source = f"`{m['source']}`" + (f" against `{m['against']}`" if m.get("against") else "")
    return (f"sign agreement {agree}/{m['resolved_cells']} of the cells whose real CI excludes 0 and Spearman "
            f"{m['spearman']:+.2f} over {m['cells']} cells, where the bar is >= {SIGN_AGREEMENT_BAR:.0%} and "
            f">= {SPEARMAN_BAR:g}; from {source}")


def withheld_text(sweep: bool = False) -> str:
    """Why a simulated report leaves accuracy out, with the measured numbers (report.md's paragraph);
    ``sweep``: a tuning sweep, which still chooses on simulated validation accuracy and shows it."""
    return ("**Accuracy is left out: the simulator's accuracy is not a prediction of real training.** Checked "
            "against real runs (each policy's Δ held-out accuracy against uniform, per task and budget), its "
            f"accuracy gaps failed: {_evidence()}; it put CoBA-RL ahead of uniform in every regime of the embedded "
            "task (+11.4, +4.6, +1.3 points) where real training measured it behind (−9.1, −6.3, −1.1), and could "
            "not run DAPO or GRESO at equal steps (its simulated task runs out of mixed groups) "
            "(`cobarl compare --against`, docs/benchmarks.md §3a). What it is trusted "
            "for is shown: budgets, effective-gradient ratios, how each strategy spends its rollouts, and "
            f"difficulty transitions. `{SIM_ACCURACY_FLAG}` shows the simulated accuracy anyway, for research."
            + (" A tuning sweep still chooses on simulated validation accuracy: its section shows it, and says so."
               if sweep else ""))


def warning_text() -> str:
    """The line above a report (and on stderr) that shows simulated accuracy on request."""
    return (f"WARNING: {SIM_ACCURACY_FLAG}: the simulated accuracy below is shown for research; it is not a "
            f"prediction of real accuracy: {_evidence()}.")


def sweep_text() -> str:
    """A simulated sweep chooses on simulated validation accuracy: what suits the simulator."""
    return ("**The choice is made on simulated accuracy**, which is not a prediction of real accuracy: it says "
            f"which configuration suits the simulator; confirm it on the real back-end ({_evidence()}).")
