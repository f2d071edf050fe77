"""The regime map (`cobarl.experiments.report.regime_map`): built from compare reports written by the real
summary writer and from diagnose JSONs; the committed task-v4 reports as a real case."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from cobarl import metrics as M
from cobarl.experiments import CompareOptions, RunResult, parse_strategies
from cobarl.diagnose.stats import clopper_pearson
from cobarl.experiments.report.regime_map import build, main
from cobarl.experiments.report.report_stats import summarise_comparison
from cobarl.experiments.report.summary_io import read_summary, write_summary
from helpers import REPO

V4 = [REPO / "docs/results" / name for name in ("real-v4-policies", "real-v4-six-arms", "real-v4-policies-steps")]


def _report(path, preset, arms, *, budget="generated", steps=3, seeds=(0, 1, 2)):
    """A real comparison's summary.json: ``arms`` maps a label to its final held-out accuracy per seed."""
    opts = CompareOptions(strategies=tuple(parse_strategies([",".join(arms)])), seeds=seeds, steps=steps,
                          prompts_per_step=4, rollouts_per_prompt=4, backend="real", budget=budget, workers=1)
    made = {label: 48.0 if label == "dapo" else 16.0 for label in arms}  # dapo generates more than it trains on
    runs = [RunResult(label, seed, [{"step": k + 1, "rollouts": made[label] * (k + 1), M.ROLLOUT_COUNT: made[label],
                                     M.ROLLOUT_TRAINED: 16.0, "eval/heldout_accuracy":
                                     0.3 + (finals[i] - 0.3) * (k + 1) / steps} for k in range(steps)],
                      {"initial_heldout_accuracy": 0.3}) for label, finals in arms.items() for i, seed in enumerate(seeds)]
    train = f" --train-args {shlex.quote(f'--task {preset} --cpu-threads 1')}" if preset != "families-v4" else ""
    command = f"cobarl compare --backend real --budget {budget} --strategies {','.join(arms)} --steps {steps}{train}"
    path.mkdir(parents=True)
    write_summary(path / "summary.json", summarise_comparison(runs, opts, command=command))
    return path


def _diagnose(path, preset, seed, n_zero, reached, prompts=200):
    path.write_text(json.dumps({"task": preset, "seed": seed, "k": 16, "max_samples": 256, "n_zero": n_zero,
                                "n_reachable_of_zero": reached, "share_zero": n_zero / prompts, "share_solved": 0.2,
                                "share_mixed": 1 - 0.2 - n_zero / prompts, "reachable_of_zero": reached / n_zero}))
    return f"{preset}={path}"


@pytest.fixture
def two_regimes(tmp_path):
    u50 = {"uniform": [0.6, 0.62, 0.64], "coba": [0.55, 0.6, 0.6], "dapo": [0.7, 0.7, 0.75]}
    reports = [_report(tmp_path / "v4", "families-v4", {"uniform": [0.5, 0.5, 0.5], "coba": [0.4, 0.42, 0.41]}),
               _report(tmp_path / "u50", "families-u50", u50),
               _report(tmp_path / "u50-steps", "families-u50", {"uniform": u50["uniform"], "dapo": [0.8, 0.7, 0.9]},
                       budget="steps")]
    d0, d1 = tmp_path / "d0.json", tmp_path / "d1.json"
    diagnose = [_diagnose(d0, "families-u50", 0, 80, 40) + f",{d1}", _diagnose(tmp_path / "v4.json", "families-v4", 0, 80, 60)]
    _diagnose(d1, "families-u50", 1, 70, 30)
    return reports, diagnose


def test_map_holds_each_reports_paired_gaps_and_pooled_regime_statistics(two_regimes, tmp_path):
    reports, diagnose = two_regimes
    installed = tmp_path / "pkg" / "regime_map.json"
    assert main([*map(str, reports), *sum((["--diagnose", d] for d in diagnose), []), "--out", str(tmp_path / "map"),
                 "--install", str(installed), "--measured-on", "test machine"]) == 0
    data = json.loads((tmp_path / "map" / "regime_map.json").read_text())
    assert json.loads(installed.read_text()) == data
    assert (data["format"], data["version"]) == ("cobarl.regime-map", 1) and data["measured_on"].startswith("test machine")
    v4, u50 = data["regimes"]  # ordered by unreachable share: v4 reaches 60 of 80, u50 70 of 150
    assert set(u50) == {"name", "k", "max_samples", "share_zero", "share_solved", "share_mixed", "reachable_of_zero",
                        "reachable_of_zero_ci", "uniform_gain", "deltas"}
    assert (v4["name"], u50["name"], u50["k"], u50["max_samples"]) == ("families-v4", "families-u50", 16, 256)
    assert u50["share_zero"] == pytest.approx((0.4 + 0.35) / 2)
    assert u50["reachable_of_zero"] == pytest.approx((40 / 80 + 30 / 70) / 2)
    assert u50["reachable_of_zero_ci"] == pytest.approx(list(clopper_pearson(70, 150)))
    assert u50["uniform_gain"] == pytest.approx(0.62 - 0.3)
    for budget, folder in (("generated", "u50"), ("steps", "u50-steps")):
        gaps = read_summary(tmp_path / folder / "summary.json").gaps_vs_baseline
        for label, delta in u50["deltas"][budget].items():
            gap = gaps[label].metrics["final_heldout_accuracy"]
            assert delta == {"mean": gap.mean, "ci": list(gap.ci95), "seeds": 3}
    assert set(u50["deltas"]["generated"]) == {"coba", "dapo"} and set(u50["deltas"]["steps"]) == {"dapo"}
    assert u50["deltas"]["steps"]["dapo"]["mean"] == pytest.approx(0.8 / 3 + 0.7 / 3 + 0.9 / 3 - 0.62)
    assert list(v4["deltas"]) == ["generated"]
    md = (tmp_path / "map" / "regime_map.md").read_text()
    assert "| dapo | — | **+9.7 ± 3.8** | +18.0 ± 22.8 |" in md and "families-v4 (steps)" not in md  # bold: CI excludes 0
    assert "| dapo | — | 48 / 16 × 3 steps = 144 | 48 / 16 × 3 steps = 144 |" in md  # what each arm spent
    assert (tmp_path / "map" / "regime_map.png").read_bytes()[:4] == b"\x89PNG"


def test_one_policy_in_one_cell_takes_one_setting(tmp_path):
    arms = {"uniform": [0.5, 0.5, 0.5], "coba": [0.4, 0.42, 0.41]}
    d = _diagnose(tmp_path / "d.json", "families-u90", 0, 50, 5)
    a = _report(tmp_path / "a", "families-u90", arms)
    again = _report(tmp_path / "again", "families-u90", arms)
    data, _, _ = build([a, again], [d])  # the same runs twice are read once
    assert set(data["regimes"][0]["deltas"]["generated"]) == {"coba"}
    longer = _report(tmp_path / "longer", "families-u90", arms, steps=4)
    with pytest.raises(ValueError, match=r"families-u90 \(generated\): 'uniform' ran with different settings.*steps"):
        build([a, longer], [d])
    other = _report(tmp_path / "other", "families-u90", {**arms, "coba": [0.3, 0.42, 0.41]})
    with pytest.raises(ValueError, match="'coba' has the same settings but different runs"):
        build([a, other], [d])
    build([a, _report(tmp_path / "steps", "families-u90", arms, steps=4, budget="steps")], [d])  # another cell
    with pytest.raises(ValueError, match="no diagnose JSON for families-u90"):
        build([a], [])
    with pytest.raises(ValueError, match="--diagnose families-u50: no compare report"):
        build([a], [d, _diagnose(tmp_path / "u50.json", "families-u50", 0, 50, 5)])
    shares = {k: v for k, v in json.loads((tmp_path / "d.json").read_text()).items() if not k.startswith("n_")}
    (tmp_path / "shares.json").write_text(json.dumps(shares))
    with pytest.raises(ValueError, match="lacks the counts"):  # shares alone cannot be pooled over seeds
        build([a], [f"families-u90={tmp_path / 'shares.json'}"])
    (tmp_path / "shares.json").write_text(json.dumps({**shares, "prompts": 200}))
    assert build([a], [f"families-u90={tmp_path / 'shares.json'}"])[0]["regimes"][0]["reachable_of_zero_ci"] == \
        pytest.approx(list(clopper_pearson(5, 50)))


def test_committed_v4_reports_give_their_gaps(tmp_path):
    diagnose = _diagnose(tmp_path / "v4.json", "families-v4", 0, 80, 60)
    data, cells, md = build(V4, [diagnose])
    (v4,) = data["regimes"]
    coba = v4["deltas"]["generated"]["coba"]
    assert coba["mean"] == pytest.approx(-0.091, abs=5e-4) and coba["seeds"] == 5
    assert (coba["ci"][1] - coba["ci"][0]) / 2 == pytest.approx(0.016, abs=5e-4)  # -9.1 ± 1.6 held-out points
    assert v4["deltas"]["generated"]["coba-reference"]["mean"] < 0  # from the six-arm report
    assert set(v4["deltas"]["steps"]) == {"reinforce-ada", "reinforce-ada-pos", "dapo", "greso", "pods"}
    assert v4["deltas"]["steps"]["dapo"]["mean"] == pytest.approx(0.121, abs=5e-4)
    assert "| coba | **-9.1 ± 1.6** | — |" in md


def test_the_packaged_map_is_the_committed_one_and_reads_in_diagnose():
    """cobarl diagnose's default map is the regime map committed with its figure (docs/results/regime-map),
    holds the three presets along the unreachable share, and passes diagnose's own validation."""
    from cobarl.diagnose.placement import default_map_path, validate_map

    packaged = json.loads(default_map_path().read_text())
    committed = json.loads((Path(__file__).resolve().parent.parent / "docs" / "results" / "regime-map" /
                            "regime_map.json").read_text())
    assert packaged == committed
    regimes = validate_map(packaged, str(default_map_path()))
    reach = {r["name"]: r["reachable_of_zero"] for r in regimes}
    assert set(reach) == {"families-v4", "families-u50", "families-u90"}
    assert reach["families-v4"] > reach["families-u50"] > reach["families-u90"]
    assert {"coba", "knapsack-rl", "dapo"} <= set(next(r for r in regimes if r["name"] == "families-u90")["deltas"]["generated"])
