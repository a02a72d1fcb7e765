"""The examples keep working: the script runs, and the notebook's code cells run in order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_local_federation_script_runs():
    done = subprocess.run([sys.executable, str(EXAMPLES / "local_federation.py")],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "total monthly spending: 191,682.99" in done.stdout
    assert done.stdout.count("meter report of") == 3


@pytest.mark.timeout(90)
def test_notebook_cells_run_in_order():
    notebook = json.loads((EXAMPLES / "secure_sum.ipynb").read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            exec(compile(source, "notebook", "exec"), namespace)
    assert round(namespace["result"].value, 2) == 191682.99
