"""Top-level `cobarl` dispatch and `cobarl bench allocate`."""

import json

from cobarl.cli import main


def test_unknown_command_lists_valid_ones(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'; valid: train, compare, eval, bench" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "compare", "eval", "bench"))


def test_bench_allocate_paper_setting(capsys):
    assert main(["bench", "allocate", "--settings", "paper", "--repeats", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["threshold", "heap", "dp"]
    # Same instance, three solvers: the objectives must be identical (the timings are not asserted).
    assert all(r["same_objective"] and r["same_counts"] for r in rows)
    assert {r["prompts"] for r in rows} == {512} and {r["total_budget"] for r in rows} == {8192}
