"""Regenerate the gRPC stubs from protos/ into src/invisible/v1/.

The one way stubs are made. `tests/test_protos.py` runs the same generation
into a temporary folder and fails when the committed stubs differ.

    python scripts/gen_protos.py [OUT_ROOT]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def _mypy_grpc_plugin() -> str:
    """mypy-protobuf's plugin, beside this interpreter (a venv) or on PATH."""
    beside = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    found = str(beside) if beside.exists() else shutil.which("protoc-gen-mypy_grpc")
    if not found:
        raise SystemExit("protoc-gen-mypy_grpc not found: pip install -e '.[dev]'")
    return found


def generate(out_root: Path) -> list[Path]:
    """Write *_pb2.py, *_pb2.pyi, *_pb2_grpc.py and *_pb2_grpc.pyi under out_root."""
    from grpc_tools import protoc

    plugin = _mypy_grpc_plugin()

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy_grpc={plugin}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package = out_root / "invisible" / "v1"
    docstring = '"""Generated gRPC stubs: do not edit; run scripts/gen_protos.py."""\n'
    (package / "__init__.py").write_text(docstring)
    return sorted(package.iterdir())


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src"
    for path in generate(target):
        print(path.relative_to(target))
