"""The simulator checked cell by cell against a real regime map (cobarl.experiments.simulation.sim_map)."""

from __future__ import annotations

import json

import pytest

from cobarl.experiments.comparison.cli import main
from cobarl.experiments.simulation.sim_map import (
    cell_check,
    comparison_cells,
    gap_spearman,
    preset_for,
    real_task,
    sign_agreement,
    verdict,
)


def _gap(mean, lo, hi, n=5):
    return {"final_heldout_accuracy": {"mean": mean, "ci95": [lo, hi], "half_width": None, "n": n, "values": []}}


def _summary(gaps: dict, budget: float = 1.0, command: str = "cobarl compare --backend real") -> dict:
    return {"baseline": "uniform", "budget_multiplier": budget, "command": command,
            "gaps_vs_baseline": {label: _gap(*g) for label, g in gaps.items()}}


def test_cells_pair_each_arm_of_a_comparison():
    real = _summary({"coba": (-0.09, -0.12, -0.06), "knapsack-rl": (0.01, -0.02, 0.04)}, budget=0.5)
    sim = _summary({"coba": (0.11, 0.08, 0.14), "knapsack-rl": (0.02, 0.0, 0.04)})
    cells = comparison_cells(sim, real, "families-u50")
    assert [(c["task"], c["budget"], c["policy"], c["real_resolved"]) for c in cells] == [
        ("families-u50", 0.5, "coba", True), ("families-u50", 0.5, "knapsack-rl", False)]
    assert cells[0]["simulated"] == 0.11 and cells[0]["real"] == -0.09 and cells[0]["seeds"] == 5
    with pytest.raises(ValueError, match="different baselines"):
        comparison_cells({**sim, "baseline": "coba"}, real, "families-u50")


def _cell(sim, real, resolved=True, policy="p", task="families-v4", budget=1.0):
    return {"task": task, "budget": budget, "policy": policy, "simulated": sim, "real": real, "real_resolved": resolved,
            "simulated_ci95": None, "real_ci95": None}


def test_sign_agreement_counts_only_resolved_real_gaps_and_zero_has_no_sign():
    # a resolved cell the simulator could not run (NaN) counts as disagreeing, never as skipped
    cells = [_cell(0.1, 0.05), _cell(-0.1, 0.05), _cell(0.0, -0.02), _cell(0.3, -0.2, resolved=False),
             _cell(float("nan"), 0.1)]
    assert sign_agreement(cells) == {"agree": 1, "resolved": 4, "share": 1 / 4}
    assert sign_agreement([_cell(0.1, 0.05, resolved=False)])["share"] is None


def test_spearman_over_all_cells_and_when_it_is_undefined():
    assert gap_spearman([_cell(1, 10), _cell(2, 30), _cell(3, 20), _cell(4, 40)]) == pytest.approx(0.8)
    assert gap_spearman([_cell(1, 10), _cell(2, 20)]) is None  # under 3 cells
    assert gap_spearman([_cell(1, 10), _cell(1, 20), _cell(1, 30)]) is None  # a constant side
    assert gap_spearman([_cell(1, 1), _cell(2, 2), _cell(float("nan"), 3), _cell(3, 3.5)]) == pytest.approx(1.0)


def test_verdict_against_the_bar():
    assert verdict(0.8, 0.7)["passed"] is True
    assert verdict(0.79, 0.95)["passed"] is False and "fails" in verdict(0.79, 0.95)["text"]
    assert verdict(1.0, 0.69)["passed"] is False
    assert verdict(None, 0.9)["passed"] is None and "undetermined" in verdict(None, 0.9)["text"]
    # v4's measured case: the simulator predicted +11.4 where the real task measured -9.1 -> the sign fails
    check = cell_check([_cell(0.114, -0.091, policy="coba"), _cell(0.05, 0.02, policy="knapsack-rl"),
                        _cell(0.02, 0.01, policy="dapo", resolved=False)])
    assert check["sign_agreement"]["share"] == 0.5 and check["verdict"]["passed"] is False
    with pytest.raises(ValueError, match="same cell"):
        cell_check([_cell(0.1, 0.1), _cell(0.2, 0.2)])


def test_real_task_from_the_recorded_command():
    assert real_task({"command": "cobarl compare --backend real --seeds 5"}) == "families-v4"  # cobarl train's default
    assert real_task({"command": "cobarl compare --backend real --train-args '--task families-u90 --cpu-threads 1'"}) \
        == "families-u90"
    assert real_task({"command": "cobarl compare --backend real --train-args '--dataset d.parquet'"}) is None
    assert preset_for({"command": "cobarl compare --train-args '--task families-u50'"}, "r") == "families-u50"
    with pytest.raises(ValueError, match="--task arith-v3, which has no simulator preset"):
        preset_for({"command": "cobarl compare --train-args '--task arith-v3'"}, "r")
    with pytest.raises(ValueError, match="--dataset"):
        preset_for({"command": "cobarl compare --train-args '--dataset d.parquet'"}, "r")


SHAPE = ["--steps", "6", "--seeds", "2", "--workers", "1", "--no-progress", "--no-plots"]


def _fake_real(tmp_path, name, task, budget="1", arms="uniform,coba,knapsack-rl,uniform@0.5"):
    """A simulated comparison on ``task``'s preset relabelled as a real one that ran ``--task task``: the
    simulator mirroring it must match it cell for cell."""
    out = tmp_path / name
    assert main(["--sim-preset", task, "--strategies", arms, "--budget-multiplier", budget, *SHAPE,
                 "--output-dir", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    s.update(backend="real", simulator=None, command=f"cobarl compare --backend real --train-args '--task {task}'")
    (out / "summary.json").write_text(json.dumps(s))
    return str(out)


def test_against_a_map_checks_every_cell_and_refuses_what_it_cannot_mirror(tmp_path, capsys):
    u50, u90 = _fake_real(tmp_path, "u50", "families-u50"), _fake_real(tmp_path, "u90", "families-u90", budget="0.5")
    out = tmp_path / "map"
    assert main(["--no-progress", "--no-plots", "--workers", "1", "--against", u50, u90, "--output-dir", str(out)]) == 0
    check = json.loads((out / "map_check.json").read_text())
    assert [(c["task"], c["budget"]) for c in check["cells"]] == [("families-u50", 1.0)] * 3 + [("families-u90", 0.5)] * 3
    assert all(c["simulated"] == c["real"] for c in check["cells"])  # mirrored run for run
    assert check["spearman"] == pytest.approx(1.0) and check["verdict"]["passed"] is True
    assert check["sign_agreement"] == {"agree": 2, "resolved": 2, "share": 1.0}  # uniform@0.5's, each < 0
    sub = json.loads((out / "families-u90-generated-x0.5" / "summary.json").read_text())
    assert sub["simulator"]["beyond_reach"] == [14, 16, 18, 20, 22] and sub["budget_multiplier"] == 0.5
    md = (out / "report.md").read_text()
    assert "| families-u90 | generated x0.5 | `coba` |" in md and "(c) verdict" in md and "families-u50-generated-x1/report.md" in md
    assert main(["--no-progress", "--against", u50, u90, "--output-dir", str(out)]) == 2  # never over a report
    assert "already holds" in capsys.readouterr().err
    # refused before any run, nothing written
    bad = [([u50, u50], "pass each (task, budget) once"), ([u50, u90, "--sim-preset", "families-v4"], "leave --sim-preset out"),
           ([u50, u90, "--steps", "3"], "--against takes --steps")]
    for args, message in bad:
        assert main(["--no-progress", "--against", *args, "--output-dir", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    summary = json.loads((tmp_path / "u90" / "summary.json").read_text())
    (tmp_path / "u90" / "summary.json").write_text(json.dumps({**summary, "command": "x --train-args '--task arith-v3'"}))
    assert main(["--no-progress", "--against", u50, u90, "--output-dir", str(tmp_path / "x")]) == 2
    assert "--task arith-v3, which has no simulator preset" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # one task at both budgets is two comparisons of the map, not a repeat
    steps = json.loads((tmp_path / "u50" / "summary.json").read_text())
    (tmp_path / "u50-steps").mkdir()
    (tmp_path / "u50-steps" / "summary.json").write_text(json.dumps({**steps, "budget": "steps"}))
    from cobarl.experiments.simulation.sim_map import map_plan
    assert [n for _, _, n in map_plan([u50, str(tmp_path / "u50-steps")], None)] == [
        "families-u50-generated-x1", "families-u50-steps-x1"]
    # a real world where half budget helped: the simulator, which says it hurts, fails the bar
    real = json.loads((tmp_path / "u50" / "summary.json").read_text())
    real["gaps_vs_baseline"]["uniform@0.5"]["final_heldout_accuracy"].update(mean=0.05, ci95=[0.01, 0.09])
    real["budget"] = "steps"  # mirrored too: a policy generating more than it trains on runs as many steps
    (tmp_path / "u50" / "summary.json").write_text(json.dumps(real))
    assert main(["--no-progress", "--no-plots", "--workers", "1", "--against", u50, _fake_real(tmp_path, "v4", "families-v4"),
                 "--output-dir", str(tmp_path / "fails")]) == 0
    check = json.loads((tmp_path / "fails" / "map_check.json").read_text())
    assert check["sign_agreement"]["share"] == 0.5 and check["verdict"]["passed"] is False
    assert json.loads((tmp_path / "fails" / "families-u50-steps-x1" / "summary.json").read_text())["budget"] == "steps"
