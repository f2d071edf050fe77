"""Simulated accuracy stays out of reports while it is no prediction (`cobarl.experiments.simulation.sim_trust`): the
switch both ways, ``--sim-accuracy``, sweeps, the real back-end, and the measured numbers it cites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cobarl.experiments.simulation import sim_trust
from cobarl.experiments.comparison.cli import main
from cobarl.experiments.report.figures import ACCURACY_PLOT, PLOTS
from cobarl.experiments.report.markdown import report_markdown
from cobarl.experiments.simulation.sim_map import cell_check, comparison_cells
from cobarl.experiments.report.summary_io import SummaryFormatError, read_summary

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps", "6", "--prompts-per-step", "8", "--rollouts-per-prompt", "8", "--train-prompts", "64",
        "--heldout-prompts", "16", "--clusters", "4", "--seeds", "2", "--workers", "1", "--no-progress"]
ARMS = ["--strategies", "uniform,coba,uniform@0.5"]
# what report.md shows only with accuracy: results columns, the equal-generated table, the gaps' accuracy columns
ACCURACY_MD = ("initial held-out acc", "final held-out acc", "final train solved", "rollouts to target",
               "## Held-out accuracy at equal generated rollouts", "Δ held-out acc (points)", "Δ train solved")


def _compare(tmp_path, capsys, *extra: str) -> tuple[Path, str, str, dict]:
    out = tmp_path / "cmp"
    assert main([*TINY, *ARMS, "--output-dir", str(out), *extra]) == 0
    summary = json.loads((out / "summary.json").read_text())
    return out, (out / "report.md").read_text(), capsys.readouterr().err, summary


def test_simulated_report_leaves_accuracy_out_and_says_why(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sim_trust, "SIM_ACCURACY_IS_A_PREDICTION", False)
    out, md, err, summary = _compare(tmp_path, capsys)
    assert summary["accuracy_shown"] is False
    assert not [h for h in ACCURACY_MD if h in md]
    assert "| strategy | budget per step | effective ratio | eff. ratio, last third | rollouts generated |" in md
    assert "| `uniform@0.5` | 32 |" in md and "| `coba` | 64 |" in md  # 8 prompts x 8 rollouts, halved
    assert "## How each strategy spends a step" in md and "| strategy | Δ effective ratio (relative %) |" in md
    why = sim_trust.withheld_text()
    m = sim_trust.MEASURED
    agree = f"{round(m['sign_agreement'] * m['resolved_cells'])}/{m['resolved_cells']}"
    assert why in md and agree in why and f"{m['spearman']:+.2f}" in why and m["source"] in why
    assert "WARNING" not in md + err
    assert {p.name for p in out.glob("*.png")} == set(PLOTS) - {ACCURACY_PLOT}
    assert "![transitions.png](transitions.png)" in md and ACCURACY_PLOT not in md
    # the console: budget, effective ratio and rollouts generated, no accuracy
    assert "uniform@0.5              budget 32/step   effective ratio" in err and "held-out acc" not in err
    assert "rollouts generated 192" in err  # 6 steps x 32 rollouts
    # the numbers stay in summary.json: the check (--against) compares both sides' accuracy
    assert read_summary(out / "summary.json").strategies["coba"].metrics["final_heldout_accuracy"].n == 2


def test_sim_accuracy_shows_everything_under_a_warning(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sim_trust, "SIM_ACCURACY_IS_A_PREDICTION", False)
    _, md, err, summary = _compare(tmp_path, capsys, "--sim-accuracy", "--no-plots")
    assert summary["accuracy_shown"] is True
    assert md.splitlines()[2] == f"**{sim_trust.warning_text()}**"  # right under the title
    assert sim_trust.warning_text() in err and "held-out acc" in err
    assert not [h for h in ACCURACY_MD if h not in md]
    assert sim_trust.withheld_text() not in md


def test_once_the_switch_says_prediction_accuracy_shows_without_a_warning(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sim_trust, "SIM_ACCURACY_IS_A_PREDICTION", True)
    _, md, err, summary = _compare(tmp_path, capsys, "--no-plots")
    assert summary["accuracy_shown"] is True
    assert not [h for h in ACCURACY_MD if h not in md]
    assert "WARNING" not in md + err and sim_trust.withheld_text() not in md and "held-out acc" in err


def test_a_simulated_sweep_still_chooses_and_says_it_is_on_simulated_accuracy(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sim_trust, "SIM_ACCURACY_IS_A_PREDICTION", False)
    out = tmp_path / "grid"
    assert main([*TINY, "--strategies", "coba", "--grid", "kappa=7,15", "--no-plots", "--output-dir", str(out)]) == 0
    md, err = (out / "report.md").read_text(), capsys.readouterr().err
    assert "**Chosen: `" in md and sim_trust.sweep_text() in md and sim_trust.withheld_text(sweep=True) in md
    assert "final held-out acc" not in md  # the results table still leaves it out
    assert "chosen by validation accuracy" in err and "(simulated accuracy: not a prediction)" in err


def test_real_back_end_is_unchanged_and_refuses_the_flag(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sim_trust, "SIM_ACCURACY_IS_A_PREDICTION", False)
    assert main(["--backend", "real", "--sim-accuracy", "--output-dir", str(tmp_path / "r")]) == 2
    assert "drop --sim-accuracy" in capsys.readouterr().err and not (tmp_path / "r").exists()
    real = read_summary(ROOT / "docs/results/real-v4-six-arms/summary.json")
    md = report_markdown(real.to_dict(), [])
    assert real.accuracy_shown is None and "final held-out acc" in md and "Δ held-out acc (points)" in md
    assert "WARNING" not in md and sim_trust.withheld_text() not in md
    # a simulated summary from before the switch (no accuracy_shown) is shown as written, now under the warning
    old = read_summary(ROOT / "docs/results/sim-policies-v4/summary.json").to_dict()
    assert "accuracy_shown" not in old and "final held-out acc" in report_markdown(old, [])


def test_accuracy_shown_reads_back_and_must_be_a_bool(tmp_path):
    d = json.loads((ROOT / "docs/results/sim-policies-v4/summary.json").read_text())
    path = tmp_path / "summary.json"
    for shown in (True, False):
        path.write_text(json.dumps({**d, "accuracy_shown": shown}))
        assert read_summary(path).accuracy_shown is shown and read_summary(path).to_dict()["accuracy_shown"] is shown
    path.write_text(json.dumps({**d, "accuracy_shown": "no"}))
    with pytest.raises(SummaryFormatError, match="'accuracy_shown' must be true or false"):
        read_summary(path)


def test_measured_numbers_are_what_the_named_files_give_and_the_switch_follows_their_verdict():
    m = sim_trust.MEASURED
    source = json.loads((ROOT / m["source"]).read_text())
    if m.get("against") is None:  # a regime map's map_check.json holds the cells of both sides
        check = source
    else:
        check = cell_check(comparison_cells(source, json.loads((ROOT / m["against"]).read_text()), None))
    assert check["sign_agreement"]["share"] == pytest.approx(m["sign_agreement"])
    assert check["sign_agreement"]["resolved"] == m["resolved_cells"] and len(check["cells"]) == m["cells"]
    assert check["spearman"] == pytest.approx(m["spearman"], abs=0.005)
    assert (check["verdict"]["passed"] is True) == sim_trust.SIM_ACCURACY_IS_A_PREDICTION
