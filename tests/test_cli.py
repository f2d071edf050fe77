"""Top-level `cobarl` dispatch, `cobarl bench allocate` and the shared option checks."""

import argparse
import json
import os

import pytest

from cobarl.cli import main
from cobarl.cli_checks import integer, number, writable_dir


def test_unknown_command_lists_valid_ones(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'; valid: train, compare, probe, eval, diagnose, bench" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "compare", "eval", "diagnose", "bench"))


def test_bench_allocate_paper_setting(capsys):
    assert main(["bench", "allocate", "--settings", "paper", "--repeats", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["threshold", "heap", "dp"]
    # Same instance, three solvers: the objectives must be identical (the timings are not asserted).
    assert all(r["same_objective"] and r["same_counts"] for r in rows)
    assert {r["prompts"] for r in rows} == {512} and {r["total_budget"] for r in rows} == {8192}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
        (["--repeats", "2.5"], "argument --repeats: expected an integer, got '2.5'"),
        (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
        (["--settings", "papr"], "argument --settings: unknown setting(s) papr; valid: paper, internet"),
        (["--settings", ","], "argument --settings: no setting given"),
    ],
)
def test_bench_bad_options_get_a_message(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "allocate", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


def test_number_refuses_nan_inf_and_out_of_range():
    assert number(0, 1)("1") == 1.0 and number()("-3e2") == -300.0
    for text, message in [("nan", "finite"), ("-inf", "finite"), ("x", "expected a number"),
                          ("-0.1", ">= 0"), ("1.1", "<= 1")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            number(0, 1)(text)
    with pytest.raises(argparse.ArgumentTypeError, match="> 0"):
        number(0, above=True)("0")
    with pytest.raises(argparse.ArgumentTypeError, match=">= 2"):
        integer(2)("1")


def test_writable_dir_checks_without_creating(tmp_path):
    target = tmp_path / "a" / "b"
    writable_dir(target)  # creatable: fine, and nothing is made yet
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file is not a folder"):
        writable_dir(tmp_path / "file" / "sub")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="locked is not writable"):
            writable_dir(locked / "out")
