"""`cobarl diagnose`: its maths (buckets, binomial intervals, nearest regime, map checks), its resampling
loop on a scripted generator, option checks before any model loads, and one end-to-end run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import stats as sps

from cobarl.diagnose import placement
from cobarl.diagnose.stats import clopper_pearson, histogram, pass_rate_buckets, share_interval, shares, wilson

# --- buckets and shares -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", range(1, 70))
def test_buckets_partition_zero_to_k(k):
    buckets = pass_rate_buckets(k)
    assert [c for lo, hi in buckets for c in range(lo, hi + 1)] == list(range(k + 1))
    assert buckets[0] == (0, 0) and buckets[-1] == (k, k)


def test_buckets_scale_with_k():
    assert pass_rate_buckets(16) == [(0, 0), (1, 4), (5, 11), (12, 15), (16, 16)]
    assert pass_rate_buckets(32) == [(0, 0), (1, 8), (9, 23), (24, 31), (32, 32)]


def test_histogram_and_shares():
    successes = [0, 0, 0, 1, 4, 5, 11, 12, 15, 16]
    assert [h["prompts"] for h in histogram(successes, 16)] == [3, 2, 2, 2, 1]
    assert shares(successes, 16) == {"share_zero": 0.3, "share_mixed": 0.6, "share_solved": 0.1}
    with pytest.raises(ValueError, match=r"successes\[1\] = 17"):
        shares([0, 17], 16)


# --- binomial intervals ---------------------------------------------------------------------------------


def test_intervals_known_values():
    # Clopper-Pearson (0, 10): upper = 1 - 0.025 ** (1/10); (5, 10): the textbook [0.187, 0.813]
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1))
    assert clopper_pearson(5, 10) == pytest.approx((0.18709, 0.81291), abs=1e-5)
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** 0.1), 1.0)
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)


@pytest.mark.parametrize("hits,n", [(1, 7), (8, 64), (63, 64), (30, 200)])
def test_intervals_match_scipy(hits, n):
    test = sps.binomtest(hits, n)
    exact, score = test.proportion_ci(method="exact"), test.proportion_ci(method="wilson")
    assert clopper_pearson(hits, n) == pytest.approx((exact.low, exact.high), abs=1e-9)
    assert wilson(hits, n) == pytest.approx((score.low, score.high), abs=1e-9)


def test_share_interval_of_nothing_is_none():
    assert share_interval(0, 0) == {"share": None, "ci": None, "hits": 0, "of": 0}
    with pytest.raises(ValueError, match="hits <= n"):
        share_interval(3, 2)


# --- the regime map ---------------------------------------------------------------------------------------

REGIMES = [
    {"name": "families-v4", "k": 16, "max_samples": 256, "share_zero": 0.37, "reachable_of_zero": 0.76,
     "deltas": {"generated": {"coba": {"mean": -0.031, "ci": [-0.05, -0.012], "seeds": 5}},
                "steps": {"dapo": {"mean": 0.1, "ci": [0.05, 0.15], "seeds": 5}}}, "uniform_gain": 0.21},
    {"name": "families-u50", "k": 16, "max_samples": 256, "share_zero": 0.40, "reachable_of_zero": 0.45},
    {"name": "families-u90", "k": 16, "max_samples": 256, "share_zero": 0.46, "reachable_of_zero": 0.12},
]


def _map(regimes=REGIMES, **top):
    return {"format": "cobarl.regime-map", "version": 1, "measured_on": "test", "regimes": regimes, **top}


def test_nearest_regime_by_reachability_then_share_zero():
    near = placement.nearest_regime(REGIMES, share_zero=0.2, reachable_of_zero=0.65, reachable_ci=[0.55, 0.74])
    assert near["regime"]["name"] == "families-v4" and near["consistent"] == []  # 0.76 is nearer than 0.45
    # An interval covering two regimes cannot tell them apart by reachability: the share at 0/k decides.
    wide = placement.nearest_regime(REGIMES, share_zero=0.40, reachable_of_zero=0.7, reachable_ci=[0.4, 0.8])
    assert wide["regime"]["name"] == "families-u50" and wide["consistent"] == ["families-v4", "families-u50"]
    # No 0/k prompt resampled: the share at 0/k alone places the data.
    none = placement.nearest_regime(REGIMES, share_zero=0.47, reachable_of_zero=None, reachable_ci=None)
    assert none["regime"]["name"] == "families-u90" and none["by"] == "share_zero"
    assert placement.nearest_regime([], share_zero=0.4, reachable_of_zero=0.5, reachable_ci=[0.4, 0.6]) is None


@pytest.mark.parametrize("mutate,message", [
    (lambda m: m.update(format="something"), "format must be 'cobarl.regime-map'"),
    (lambda m: m.update(version=2), "version 2 is not supported"),
    (lambda m: m.update(regimes={"a": 1}), "regimes must be a list"),
    (lambda m: m["regimes"][1].update(share_zero=1.5), r"regimes\[1\] \(families-u50\).share_zero must be a share"),
    (lambda m: m["regimes"][2].pop("reachable_of_zero"), "reachable_of_zero must be a finite number"),
    (lambda m: m["regimes"][0]["deltas"]["generated"]["coba"].update(ci=[0.1, -0.1]), "coba.ci must have low <= high"),
    (lambda m: m["regimes"][0]["deltas"].update(tokens={}), "unknown budget 'tokens'"),
    (lambda m: m["regimes"][2].update(name="families-v4"), "regime names repeat"),
    (lambda m: m["regimes"][0].update(k=0), "k must be a positive integer"),
])
def test_map_validation_names_the_problem(mutate, message):
    data = json.loads(json.dumps(_map()))
    mutate(data)
    with pytest.raises(ValueError, match=message):
        placement.validate_map(data, "m.json")


def test_read_map(tmp_path):
    missing = tmp_path / "none.json"
    assert placement.read_map(missing, explicit=False)[0] is None  # the packaged map not built yet: skip
    with pytest.raises(ValueError, match="--map .* no such file"):
        placement.read_map(missing, explicit=True)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(_map([])))
    data, note = placement.read_map(empty, explicit=True)
    assert data is None and "holds no regimes" in note
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_map()))
    assert [r["name"] for r in placement.read_map(good, explicit=True)[0]["regimes"]] == [r["name"] for r in REGIMES]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        placement.read_map(bad, explicit=True)


def test_delta_lines_in_points():
    lines = placement.delta_lines(REGIMES[0])
    assert "+21.0 points" in lines[0]
    assert any("coba" in line and "-3.1 [-5.0, -1.2] (5 seeds)" in line for line in lines)
    assert any("at equal steps" in line for line in lines)


# --- the resampling loop ----------------------------------------------------------------------------------


class ScriptedGenerator:
    """Prompt ``"s<j>"`` succeeds only at its j-th sample in all (counted across calls); ``"s0"`` never;
    ``"f<j>"`` fails only at its j-th sample."""

    def __init__(self):
        self.drawn, self.calls = {}, []

    def generate(self, prompts, *, n, temperature, top_p, max_tokens, seed, on_done=None):
        self.calls.append((list(prompts), n))
        out = []
        for p in prompts:
            start, j = self.drawn.get(p, 0), int(p[1:])
            self.drawn[p] = start + n
            hit = ["1" if start + i + 1 == j else "0" for i in range(n)]
            out.append(hit if p[0] == "s" else ["0" if h == "1" else "1" for h in hit])
        return out


def test_resample_stops_each_prompt_once_decided():
    from cobarl.diagnose.sample import Sampler, first_pass, resample
    from cobarl.rewards import load_reward
    from cobarl.stats import success_rule
    from cobarl.train.rewards import make_reward_func

    gen = ScriptedGenerator()
    sampler = Sampler(gen, make_reward_func(load_reward("exact")), success_rule("==1"), temperature=1.0, max_tokens=4)
    texts = ["s20", "s0", "s3", "f40", "f0"]
    answers = ["1"] * len(texts)
    successes = first_pass(sampler, texts, answers, 8, seed=0)
    assert successes.tolist() == [0, 0, 1, 8, 8]
    more = resample(sampler, texts, answers, [0, 1, 3, 4], [True, True, False, False], k=8, max_samples=50,
                    round_size=16, seed=0)
    assert more.decided_at == [20, None, 40, None]
    assert more.samples.tolist() == [24, 50, 40, 50]  # whole rounds of 16, the last one cut to the budget of 50
    assert more.successes.tolist() == [1, 0, 39, 50]
    assert [n for _, n in gen.calls] == [8, 16, 16, 10]
    assert sampler.generated == 5 * 8 + 4 * 16 + 3 * 16 + 2 * 10 == sum(len(p) * n for p, n in gen.calls)


# --- the command line: refused before any model loads ---------------------------------------------------


@pytest.fixture
def no_model(monkeypatch, tmp_path):
    """Fails the test if a model is resolved or loaded; an empty model cache."""
    import cobarl.models.load as load

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(load, "resolve_model_path", refuse)
    monkeypatch.setattr(load, "load_model", refuse)
    monkeypatch.setenv("COBARL_CACHE", str(tmp_path / "cache"))
    yield
    assert not (tmp_path / "cache").exists()


def _refused(capsys, argv):
    from cobarl.diagnose.cli import main

    try:
        status = main(argv)
    except SystemExit as stop:  # argparse's own refusals
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()[-1]) > 0
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv,message", [
    (["--k", "1"], "argument --k: must be >= 2"),
    (["--temperature", "0"], "argument --temperature: must be > 0"),
    (["--max-samples", "nan"], "argument --max-samples: expected an integer"),
    (["--k", "16", "--max-samples", "16"], "--max-samples 16 must be larger than --k 16"),
    (["--success", "~1"], "--success: success rule '~1' is not understood"),
    (["--task", "families-v4", "--dataset", "d.jsonl"], "--task families-v4 names an embedded task"),
    (["--reward", "nosuch"], "unknown reward 'nosuch'"),
    (["--reward-timeout", "-1"], "argument --reward-timeout: must be > 0"),
    (["--prompts", "385"], "--prompts 385 exceeds the 384 train prompts"),
    (["--dataset", "no/such/file.jsonl"], "no/such/file.jsonl"),
    (["--device", "tpu"], "argument --device: invalid choice"),
])
def test_bad_options_refused_before_any_model(capsys, no_model, argv, message):
    assert message in _refused(capsys, argv)


def test_vllm_refused_when_it_cannot_be_imported(capsys, no_model, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert "--use-vllm needs vLLM, which cannot be imported here" in _refused(capsys, ["--use-vllm"])


def test_bad_map_refused_before_any_model(capsys, no_model, tmp_path):
    bad = tmp_path / "map.json"
    bad.write_text(json.dumps(_map(version=7)))
    assert "version 7 is not supported" in _refused(capsys, ["--map", str(bad)])
    assert "no such file" in _refused(capsys, ["--map", str(tmp_path / "missing.json")])


# --- end to end -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def u90_cache(tmp_path_factory):
    """A COBARL_CACHE holding a briefly warm-started families-u90 model under its default name."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from cobarl.models.tiny import ensure_default_model

    cache = tmp_path_factory.mktemp("cache")
    built = ensure_default_model(cache, seed=0, steps=60, task="families-u90")  # seconds, not the default minute
    shutil.move(str(built), str(cache / "tiny-families-u90-seed0"))
    return cache


@pytest.mark.slow
def test_diagnose_end_to_end(capsys, monkeypatch, tmp_path, u90_cache):
    from cobarl.diagnose.cli import main

    monkeypatch.setenv("COBARL_CACHE", str(u90_cache))
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(_map()))
    argv = ["--task", "families-u90", "--prompts", "24", "--k", "8", "--max-samples", "64", "--json", "--no-progress",
            "--map", str(map_file)]
    runs = []
    for _ in range(2):
        assert main(argv) == 0
        runs.append(json.loads(capsys.readouterr().out))
    r = runs[0]
    assert (r["k"], r["max_samples"], r["prompts"], r["prompts_available"]) == (8, 64, 24, 384)
    assert sum(h["prompts"] for h in r["histogram"]) == 24 == sum(r["successes_histogram"])
    assert r["share_zero"] + r["share_mixed"] + r["share_solved"] == pytest.approx(1.0)
    assert r["share_zero"] == r["successes_histogram"][0] / 24
    resampled = [p for p in r["per_prompt"] if "resampled" in p]
    assert r["resampled"] == {"zero": r["successes_histogram"][0], "solved": r["successes_histogram"][8]}
    assert r["rollouts_generated"] == 24 * 8 + r["rollouts"]["resampling"]
    assert r["rollouts"]["resampling"] >= sum(p["samples"] - 8 for p in resampled)  # whole rounds are generated
    for p in resampled:
        assert 8 < p["samples"] <= 64 and (p["decided_at"] is None or 8 < p["decided_at"] <= p["samples"])
        if p["decided_at"] is None:  # undecided: every sample drawn, all failed (0/k) or all succeeded (k/k)
            assert p["samples"] == 64 and p["successes"] == (0 if p["resampled"] == "zero" else 64)
    if r["resampled"]["zero"]:
        lo, hi = r["reachable_of_zero_ci"]
        assert lo <= r["reachable_of_zero"] <= hi
    assert r["nearest_regime"]["name"] in {g["name"] for g in REGIMES} and "not on your model" in r["nearest_regime"]["caveat"]
    assert r["nearest_regime"]["scale_note"]  # k=8, 64 samples vs the map's 16 and 256
    for run in runs:
        run.pop("seconds")
    assert runs[0] == runs[1]  # same seed, same numbers
