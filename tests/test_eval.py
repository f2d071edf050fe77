"""avg@k / pass@k estimators, the evaluation loop, and `cobarl eval` end to end on the tiny model."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
from helpers import DATA, run_module

from cobarl.evaluate import default_ks, evaluate_benchmarks, pass_at_k, summarize
from cobarl.models.tiny import DEFAULT_MODEL_NAME



# --- estimators ------------------------------------------------------------------------------------


def test_pass_at_k_hand_worked():
    assert pass_at_k(16, 0, 1) == 0.0
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)  # pass@1 is the plain success rate
    # 2 correct of 4, k=2: 1 - C(2,2)/C(4,2) = 1 - 1/6
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    # 1 correct of 16, k=16: the one correct sample is always drawn
    assert pass_at_k(16, 1, 16) == 1.0
    # 3 correct of 10, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_pass_at_k_matches_enumerating_subsets():
    for n in range(1, 7):
        for c in range(n + 1):
            outcomes = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute), (n, c, k)


def test_summarize_and_default_ks():
    assert default_ks(16) == [1, 2, 4, 8, 16] and default_ks(1) == [1] and default_ks(3) == [1, 2, 3]
    # problem A: 1 of 4 correct, problem B: 4 of 4 -> avg@4 = (0.25 + 1) / 2
    out = summarize([[1, 0, 0, 0], [1, 1, 1, 1]])
    assert out["avg@4"] == pytest.approx(0.625) and out["pass@1"] == pytest.approx(0.625)
    # pass@2: A = 1 - C(3,2)/C(4,2) = 0.5, B = 1 -> 0.75
    assert out["pass@2"] == pytest.approx(0.75) and out["pass@4"] == 1.0
    with pytest.raises(ValueError):
        summarize([])


# --- the loop with a scripted generator -------------------------------------------------------------


class ScriptedGenerator:
    """Sample j of a prompt is its answer when j < the number encoded in the prompt, else "wrong"."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.calls = []

    def generate(self, prompts, *, n, temperature, top_p, max_tokens, seed, on_done=None):
        self.calls.append(dict(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens))
        out = [[self.answers[p] if j < int(p.split("#")[1]) else "wrong" for j in range(n)] for p in prompts]
        if on_done:
            on_done(len(prompts) * n)
        return out


class P:
    def __init__(self, id, prompt, answer):
        self.id, self.prompt, self.answer = id, prompt, answer


def test_evaluate_benchmarks_metrics_and_failures():
    from cobarl.rewards import GuardedReward, exact_match_reward

    a = [P("a0", "q#0", "1"), P("a1", "q#2", "2")]  # 0/4 and 2/4 correct
    b = [P("b0", "r#4", "3")]  # 4/4
    gen = ScriptedGenerator({"q#0": "1", "q#2": "2", "r#4": "3"})

    def flaky(completion, answer):
        if completion == "wrong":
            raise RuntimeError("cannot parse")
        return exact_match_reward(completion, answer)

    result = evaluate_benchmarks(gen, {"a": a, "b": b}, {"a": GuardedReward(flaky, timeout=None), "b": exact_match_reward},
                                 k=4, progress=False)
    assert gen.calls[0] == dict(n=4, temperature=1.0, top_p=0.9, max_tokens=4096)  # the papers' defaults
    ra, rb = result.benchmarks["a"], result.benchmarks["b"]
    assert ra.metrics["avg@4"] == pytest.approx(0.25) and rb.metrics["avg@4"] == 1.0
    assert ra.metrics["pass@2"] == pytest.approx(5 / 6 / 2)  # (0 + (1 - 1/6)) / 2
    assert ra.reward_failures == 6 and rb.reward_failures == 0  # "wrong" raised: counted, scored 0
    assert [p["correct"] for p in ra.per_problem] == [0, 2]
    assert result.average["avg@4"] == pytest.approx((0.25 + 1.0) / 2)  # unweighted over benchmarks
    flat = result.metrics()
    assert flat["eval/a/pass@4"] == pytest.approx(0.5) and "eval/average/avg@4" in flat
    assert "average" in result.table() and json.dumps(result.to_json())


def test_hf_generator_shapes_and_cap():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from cobarl.evaluate import HFGenerator
    from cobarl.models.tiny import build_model, build_tokenizer

    tok = build_tokenizer()
    gen = HFGenerator(build_model(tok, seed=0), tok, batch_size=6)  # 6 // k=3 -> 2 prompts per call
    out = gen.generate(["1+1=", "2+2=", "3+3="], n=3, temperature=1.0, top_p=0.9, max_tokens=3, seed=0)
    assert [len(g) for g in out] == [3, 3, 3] and all(isinstance(c, str) for g in out for c in g)
    again = gen.generate(["1+1=", "2+2=", "3+3="], n=3, temperature=1.0, top_p=0.9, max_tokens=3, seed=0)
    assert out == again  # seeded
    greedy = gen.generate(["1+1="], n=4, temperature=0.0, top_p=1.0, max_tokens=3, seed=0)
    assert len(greedy[0]) == 4 and len(set(greedy[0])) == 1
    assert gen.max_new_tokens(["1+1="], 10_000) == 128 - 4  # capped by max_position_embeddings


# --- the CLI -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """A COBARL_CACHE holding a briefly warm-started tiny model under the default model's name."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from cobarl.models.tiny import ensure_default_model

    cache = tmp_path_factory.mktemp("cache")
    built = ensure_default_model(cache, seed=0, steps=30)  # seconds, not the default minute
    shutil.move(str(built), str(cache / f"{DEFAULT_MODEL_NAME}-seed0"))
    return cache


@pytest.mark.slow
def test_cobarl_eval_end_to_end(tmp_path, cache_dir):
    out = tmp_path / "res" / "results.json"
    res = run_module("cobarl.evaluate", "--benchmarks", "families-v4", str(DATA / "arith_sample.jsonl"),
                     "--k", "4", "--limit", "12", "--template", "raw", "--max-tokens", "6", "--no-progress",
                     "--save-completions", "-o", str(out), timeout=240, cwd=tmp_path, COBARL_CACHE=str(cache_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["benchmarks"]) == {"families-v4", "arith_sample"}
    for name, b in data["benchmarks"].items():
        assert b["problems"] == 12 and b["samples"] == 4
        assert 0.0 <= b["avg@4"] <= b["pass@2"] <= b["pass@4"] <= 1.0
        assert b["avg@4"] == pytest.approx(b["pass@1"]) and len(b["per_problem"]) == 12
    assert data["config"]["rewards"] == {"families-v4": "exact", "arith_sample": "math"}  # auto: math for files
    assert data["config"]["k"] == 4 and data["config"]["top_p"] == 0.9 and data["config"]["temperature"] == 1.0
    assert data["config"]["model"].endswith(f"{DEFAULT_MODEL_NAME}-seed0")  # the embedded default
    assert data["average"]["avg@4"] == pytest.approx(
        (data["benchmarks"]["families-v4"]["avg@4"] + data["benchmarks"]["arith_sample"]["avg@4"]) / 2)
    lines = (out.parent / "completions.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 12 * 4
    assert "benchmark" in res.stdout and "average" in res.stdout and "avg@4" in res.stdout


def test_cli_errors_and_checkpoint_resolution(tmp_path, monkeypatch, capsys, cache_dir):
    from cobarl.evaluate.cli import main, resolve_eval_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["--benchmarks", "aime24", "--model", str(tmp_path)]) == 2
    assert "unreachable" in capsys.readouterr().err
    assert main(["--benchmarks", str(tmp_path / "nope.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--k", "0"])
    assert exit_.value.code == 2 and "argument --k: must be >= 1, got 0" in capsys.readouterr().err
    # a training run directory -> its highest checkpoint with weights
    model = cache_dir / f"{DEFAULT_MODEL_NAME}-seed0"
    run = tmp_path / "run"
    for step in (2, 10):
        shutil.copytree(model, run / f"checkpoint-{step}")
    (run / "checkpoint-12").mkdir()  # an incomplete checkpoint (no config.json) is skipped
    assert resolve_eval_model(str(run)) == str(run / "checkpoint-10")
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        resolve_eval_model(str(tmp_path / "run" / "checkpoint-12"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "nan"], "argument --temperature: must be a finite number, got 'nan'"),
        (["--top-p", "0"], "argument --top-p: must be > 0"),
        (["--top-p", "1.5"], "argument --top-p: must be <= 1"),
        (["--verify-timeout", "inf"], "argument --verify-timeout: must be a finite number"),
        (["--limit", "0"], "argument --limit: must be >= 1"),
        (["--batch-size", "many"], "argument --batch-size: expected an integer, got 'many'"),
    ],
)
def test_bad_numeric_options_get_a_message(capsys, args, message):
    from cobarl.evaluate.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("/dev/null/r.json", "cannot write the results into /dev/null: /dev/null is not a folder"),
        ("{tmp}", "is a folder; give a file path such as"),
    ],
)
def test_output_path_is_checked_before_the_evaluation(tmp_path, monkeypatch, capsys, output, message):
    from cobarl.evaluate import cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("the evaluation started although its results could not be written")

    monkeypatch.setattr(cli, "parse_benchmark", must_not_run)
    monkeypatch.setattr(cli, "resolve_eval_model", must_not_run)
    assert cli.main(["-o", output.format(tmp=tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_device_cuda_without_a_gpu_is_refused_before_the_model_loads(monkeypatch, capsys, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from cobarl.evaluate import cli

    monkeypatch.setattr(cli, "resolve_eval_model", lambda *a, **k: pytest.fail("the model was resolved"))
    assert cli.main(["--device", "cuda", "-o", str(tmp_path / "r.json")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
