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
FORBIDDEN_BELOW = {
    "crypto": ("grpc", "asyncio", "invisible.net", "invisible.node", "invisible.coordinator",
               "invisible.cli", "invisible.protocols", "invisible.v1", "sqlite3", "socket"),
    "protocols": ("grpc", "asyncio", "invisible.net", "invisible.node", "invisible.coordinator",
                  "invisible.cli", "invisible.v1", "socket"),
    "metering": ("grpc", "invisible.net", "invisible.node", "invisible.coordinator", "invisible.cli",
                 "invisible.v1"),
    "net": ("invisible.node", "invisible.coordinator", "invisible.cli"),
    "node": ("invisible.coordinator", "invisible.cli"),
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
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN_BELOW[layer]):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def test_generated_stubs_are_current(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    fresh, committed = tmp_path / "invisible" / "v1", PACKAGE / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
    stale = [n for n in names if not filecmp.cmp(fresh / n, committed / n, shallow=False)]
    assert stale == [], "run `make protos` and commit the stubs"
