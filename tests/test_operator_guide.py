"""docs/operators.md, run as written: every ```sh block, in order, in one shell.

The guide's three machines (the CA holder, the bank, the hospital, and the requester) are
folders of a temporary directory, and its fixed ports (7441, 7442, 9441, 9442) are those of
a network namespace the test makes for it (`unshare --net`, loopback only), so no other
process on the machine can hold them. Skipped, naming why, only where such a namespace
cannot be made (outside CI); CI runs as root and can make it.

Checks that the guide's commands all succeed and that what it says they show is shown: the
job's total equals the plaintext sum of the two institutions' columns, both nodes report
themselves serving, the revoked certificate is listed, and the ledger and its backup verify.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from invisible.samples import sample_path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "operators.md"


def guide_script() -> str:
    blocks = re.findall(r"^```sh\n(.*?)^```", GUIDE.read_text(), flags=re.S | re.M)
    assert len(blocks) >= 10, "the guide's command blocks were not found"
    return "set -euo pipefail\nset -m\n" + "\n".join(blocks)


def namespace_prefix() -> list[str]:
    """A command prefix that runs in a new network namespace with loopback up."""
    probe = subprocess.run(["unshare", "--net", "--map-root-user", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0 or shutil.which("ip") is None:
        why = f"no network namespace here ({probe.stderr.strip() or 'ip not found'})"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return ["unshare", "--net", "--map-root-user", "sh", "-c",
            'ip link set lo up && exec bash "$0"']


@pytest.mark.timeout(420)
def test_the_operator_guide_runs_as_written(tmp_path):
    prefix = namespace_prefix()
    for party in ("bank", "hospital"):
        (tmp_path / party / "data").mkdir(parents=True)
        shutil.copy(sample_path(party), tmp_path / party / "data" / "customers.csv")
    script = tmp_path / "guide.sh"
    script.write_text(guide_script())
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(ROOT / "src"))
    process = subprocess.Popen([*prefix, str(script)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=400)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    logs = "".join(f"\n--- {p}.log\n" + (tmp_path / p / "node.log").read_text()
                   for p in ("bank", "hospital") if (tmp_path / p / "node.log").exists())
    assert process.returncode == 0, output[-6000:] + logs[-4000:]

    expected = sum(float(np.loadtxt(sample_path(p), delimiter=",", skiprows=1,
                                    usecols=2).sum()) for p in ("bank", "hospital"))
    # the job before the revocation and the one after the hospital's renewal: same total
    assert output.count("secure_sum job") == 2
    assert output.count(f"  {expected:,.2f}") == 2, (expected, output[-3000:])
    for node in ("bank", "hospital"):  # the columns office may use, the certificate's days
        assert re.search(rf"{node} +serving +datasets: customers \(monthly_spend:float\); "
                         r"certificate 365 days left, CA 365; revocation list 1", output)
    assert "revoke ca/issued/hospital.pem: hospital (party), serial" in output
    assert "certificate for hospital (party) written to ca/issued/hospital-2027.pem" in output
    assert re.search(r"backed up to backups/bank-ledger\.sqlite; the copy: .*intact", output)
    assert (tmp_path / "backups" / "bank-ledger.sqlite").exists()
    assert "office" in output and "secure_sum" in output
    assert not list(tmp_path.glob("*/state/*.pid"))  # both nodes stopped cleanly
