"""The package's layers go one way: no module imports a module that imports it back."""

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
