"""Dependencies point one way (docs/architecture.md), checked on the source itself.

Every import counts, lazy ones inside functions included; imports under ``if TYPE_CHECKING:``
do not (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# coe_runtime's floors, bottom to top: a module may import its own floor or lower ones only.
RUNTIME_LAYERS: dict[str, int] = {
    **dict.fromkeys(["errors", "labels", "data", "store", "answers", "progress", "step"], 0),
    **dict.fromkeys(["models", "readers", "clue_file", "seeds", "prompts", "tasks", "metrics"], 1),
    **dict.fromkeys(["generate"], 2),
    **dict.fromkeys(["evaluate"], 3),  # used by train to choose the best epoch on dev
    **dict.fromkeys(["train", "prepare"], 4),
    **dict.fromkeys(["steer", "clues", "__main__", "__init__"], 5),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "coe_runtime":
                found.update(f"coe_runtime.{a.name}" for a in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _runtime_modules() -> dict[str, set[str]]:
    out = {}
    for path in sorted((REPO / "coe_runtime").glob("*.py")):
        deps = {m.split(".")[1] for m in _imports(path) if m.startswith("coe_runtime.")}
        out[path.stem] = deps - {path.stem}
    for package in sorted(p.parent for p in (REPO / "coe_runtime").glob("*/__init__.py")):
        deps = {
            m.split(".")[1]
            for f in package.rglob("*.py")
            for m in _imports(f)
            if m.startswith("coe_runtime.")
        }
        out[package.name] = deps - {package.name}
    return out


def test_runtime_never_imports_the_controller():
    offenders = {
        path.name
        for path in (REPO / "coe_runtime").rglob("*.py")
        if any(m.split(".")[0] == "coe_controller" for m in _imports(path))
    }
    assert not offenders


def test_every_runtime_module_has_a_floor():
    assert set(_runtime_modules()) <= set(RUNTIME_LAYERS), set(_runtime_modules()) - set(RUNTIME_LAYERS)


def test_runtime_imports_point_downwards():
    upward = [
        (mod, dep)
        for mod, deps in _runtime_modules().items()
        for dep in deps
        if RUNTIME_LAYERS[dep] > RUNTIME_LAYERS[mod]
    ]
    assert not upward, f"imports pointing up a floor: {upward}"


def test_no_import_cycles_between_runtime_modules():
    graph = {m: d for m, d in _runtime_modules().items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*trail, node, dep])}")
            if dep not in state:
                visit(dep, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
