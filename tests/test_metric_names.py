"""The metric schema is the one place metric names are written: every name cobarl logs or reads is a
constant of cobarl/metrics.py, and every constant there is used."""

import ast
import re
from pathlib import Path

import cobarl
from cobarl import metrics as M

ROOT = Path(cobarl.__file__).parent
# A whole string that is a metric name or a metric prefix ("budget/mean", "eval/"), not prose that
# mentions one (help text, docstrings).
_NAME = re.compile(r"(%s)/[\w/@.]*" % "|".join(sorted({name.split("/")[0] for name in M.SCHEMA})))


def _modules():
    return [f for f in ROOT.rglob("*.py") if f != ROOT / "metrics.py"]


def test_no_metric_name_is_written_outside_the_schema():
    found = []
    for f in _modules():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.JoinedStr):  # f"budget/{x}": the literal part that starts the string
                node = node.values[0] if node.values else None
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAME.fullmatch(node.value):
                found.append(f"{f.relative_to(ROOT.parent)}:{node.lineno}: {node.value!r}")
    assert found == [], "metric names outside cobarl/metrics.py (use its constants):\n" + "\n".join(found)


def test_every_schema_constant_is_used():
    constants = [k for k, v in vars(M).items() if k.isupper() and isinstance(v, str)]
    text = "\n".join(f.read_text() for f in _modules())
    unused = [k for k in constants if not re.search(rf"\bM\.{k}\b|\b{k}\b", text)]
    assert unused == [], f"constants of cobarl/metrics.py that nothing uses (remove them): {unused}"
