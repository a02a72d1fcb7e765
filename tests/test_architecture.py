"""The shape of the project: import direction, stubs that match the protos."""

from __future__ import annotations

import ast
import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "invisible"
_ABOVE_KINDS = ("invisible.net", "invisible.node", "invisible.coordinator", "invisible.cli",
                "invisible.demo", "invisible.api", "invisible.v1")
FORBIDDEN_BELOW = {
    "jobspec": ("grpc", "invisible.kinds", "invisible.metering", "invisible.protocols",
                "invisible.crypto", *_ABOVE_KINDS),
    "crypto": ("grpc", "asyncio", "invisible.protocols", "invisible.kinds", "invisible.metering",
               "sqlite3", "socket", *_ABOVE_KINDS),
    "protocols": ("grpc", "asyncio", "invisible.kinds", "invisible.metering", "socket",
                  *_ABOVE_KINDS),
    "kinds": ("grpc", "asyncio", "sqlite3", "socket", *_ABOVE_KINDS),
    "metering": ("grpc", "invisible.kinds", *_ABOVE_KINDS),
    "net": ("invisible.kinds", "invisible.node", "invisible.coordinator", "invisible.cli",
            "invisible.demo", "invisible.api"),
    "node": ("invisible.coordinator", "invisible.cli", "invisible.demo", "invisible.api"),
    "coordinator": ("invisible.cli", "invisible.demo", "invisible.api"),
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_BELOW))
def test_dependencies_point_downwards_only(layer):
    offenders = []
    paths = [PACKAGE / f"{layer}.py"] if (PACKAGE / f"{layer}.py").exists() else sorted(
        (PACKAGE / layer).rglob("*.py"))
    assert paths, layer
    for path in paths:
        for module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN_BELOW[layer]):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def module_graph() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports, at any depth of the
    file (imports inside functions count: they are how a cycle hides). Importing a module
    runs its parent packages' __init__ too, so those are edges as well."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for tree_node in ast.walk(ast.parse(path.read_text())):
            if isinstance(tree_node, ast.ImportFrom):
                assert tree_node.level == 0, f"{path}: relative import"
                targets = [f"{tree_node.module}.{a.name}" for a in tree_node.names]
                targets = [t if t in modules else tree_node.module or "" for t in targets]
            elif isinstance(tree_node, ast.Import):
                targets = [a.name for a in tree_node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                while target:  # the module and its parent packages
                    if target != name:
                        edges.add(target)
                    target = target.rpartition(".")[0]
        graph[name] = edges & set(modules)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycle_anywhere_in_the_package():
    graph = module_graph()
    assert "invisible.kinds.base" in graph["invisible.kinds.secure_sum"]
    assert "invisible.kinds" in graph["invisible.kinds.secure_sum"]  # its package runs first
    assert import_cycles(graph) == []


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function(tmp_path, monkeypatch):
    package = tmp_path / "invisible"
    (package / "a").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("")
    (package / "a" / "one.py").write_text("from invisible.a.two import x\n")
    (package / "a" / "two.py").write_text("def f():\n    from invisible.a import one\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    graph = module_graph()
    assert graph["invisible.a.two"] == {"invisible", "invisible.a", "invisible.a.one"}
    assert import_cycles(graph) == [["invisible.a.one", "invisible.a.two"]]


def test_generated_stubs_are_current(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    fresh, committed = tmp_path / "invisible" / "v1", PACKAGE / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
    stale = [n for n in names if not filecmp.cmp(fresh / n, committed / n, shallow=False)]
    assert stale == [], "run `make protos` and commit the stubs"
