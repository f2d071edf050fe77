"""The package's layers go one way (no module imports a module that imports it back), and its modules
and functions stay small: no module over 450 lines, no function over 60 (named exceptions below)."""

import ast
from pathlib import Path

import cobarl

ROOT = Path(cobarl.__file__).parent


def _module_graph() -> dict[str, set[str]]:
    modules = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, f in modules.items():
        for node in ast.walk(ast.parse(f.read_text())):  # function-level imports count too
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cobarl"):
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            # A package importing its own submodules (re-exports in __init__) is structure, not a layer.
            graph[name] |= {t for t in targets if t in modules and t != name and not t.startswith(name + ".")
                            and not name.startswith(t + ".")}
    return graph


def test_no_import_cycles():
    graph = _module_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# --- size: modules by concern, functions as named steps ---------------------------------------------

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
# Known exceptions, to be split; each names why it is still here. A new entry needs a reason.
MODULE_EXCEPTIONS: set[str] = set()
FUNCTION_EXCEPTIONS: set[str] = set()


def _sources() -> dict[str, str]:
    return {f.relative_to(ROOT.parent).as_posix(): f.read_text() for f in sorted(ROOT.rglob("*.py"))}


def test_no_module_over_450_lines():
    sizes = {name: len(text.splitlines()) for name, text in _sources().items()}
    long = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES and name not in MODULE_EXCEPTIONS}
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"
    fixed = {name for name in MODULE_EXCEPTIONS if sizes.get(name, 0) <= MAX_MODULE_LINES}
    assert fixed == set(), f"no longer over the limit, drop from MODULE_EXCEPTIONS: {fixed}"


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function from ``def`` to its end, less its docstring: a long docstring documents, it
    does not make the logic longer to read."""
    n = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        n -= first.end_lineno - first.lineno + 1
    return n


def test_no_function_over_60_lines():
    sizes = {}
    for name, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                sizes[f"{name}:{node.name}"] = max(sizes.get(f"{name}:{node.name}", 0), _code_lines(node))
    long = {f: n for f, n in sizes.items() if n > MAX_FUNCTION_LINES and f not in FUNCTION_EXCEPTIONS}
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines (break them into named steps): {long}"
    fixed = {f for f in FUNCTION_EXCEPTIONS if sizes.get(f, 0) <= MAX_FUNCTION_LINES}
    assert fixed == set(), f"no longer over the limit, drop from FUNCTION_EXCEPTIONS: {fixed}"
