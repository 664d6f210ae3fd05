"""The house rules of docs/DESIGN.md ("The floors"), checked on the source: every import between lowbit's folders
points down a floor, no two modules import each other (directly or round a longer circle), and nothing in the
wheel imports the benchmarks."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import lowbit

PACKAGE = Path(lowbit.__file__).parent

# docs/DESIGN.md's floors: a folder may import only folders on lower floors (never one beside it or above it).
FLOORS = {
    "plugins": -1,
    "quant": 0, "models": 0,
    "kernels": 1, "calib": 1,
    "runtime": 2,
    "nn": 3,
    "pipeline": 4,
    "methods": 5,
    "api": 6, "checkpoint": 6,
    "static": 7, "hf": 7,
    "auto": 8, "sequential": 8,
    "apps": 9,
    "cli": 10,
    "__init__": 11, "__main__": 11,
}


def _modules() -> dict[str, Path]:
    """lowbit's module names -> their files."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The lowbit modules `name` imports anywhere in its file (function-level imports included)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own __init__
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_folder_has_a_floor():
    folders = {_folder(m) for m in _modules()}
    assert folders <= set(FLOORS), f"folders without a floor in docs/DESIGN.md: {sorted(folders - set(FLOORS))}"


def test_imports_point_down_a_floor():
    wrong = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                   if _folder(m) != _folder(t) and FLOORS[_folder(t)] >= FLOORS[_folder(m)])
    assert not wrong, "imports that do not point down a floor:\n" + "\n".join(wrong)


def test_no_import_circles():
    graph = _graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"modules importing each other: {circles}"


def test_the_wheel_does_not_import_the_benchmarks():
    hits = defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            hits[path.name].extend(n for n in names if n.split(".")[0] in ("benchmarks", "bench"))
    assert not {k: v for k, v in hits.items() if v}
