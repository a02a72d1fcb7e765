"""A process that started party nodes and is killed (a benchmark's or a test's timeout)
leaves no node behind: each node watches the process that started it and stops when it is
gone, and runs in a process group of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

STARTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from invisible.coordinator.local import NodeProcesses, write_local_federation
    layout = write_local_federation(Path(sys.argv[1]), ["a", "b"], dealers=["d"])
    nodes = NodeProcesses(layout).start()
    print(" ".join(str(p.pid) for p in nodes.processes.values()), flush=True)
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for every purpose here (it holds no port, runs no code)
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[-1].split()[0] != "Z"


@contextlib.contextmanager
def started(script: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """`script` run as a process that prints the pids it started on its first line: the
    process and those pids; whatever happens, none of them is left running."""
    starter = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert starter.stdout is not None
        pids.extend(int(p) for p in starter.stdout.readline().split())
        yield starter, pids
    finally:
        for pid in pids:  # never leave one behind, even when the test fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if starter.poll() is None:
            starter.kill()


def killed_leaves_none(starter: subprocess.Popen[str], pids: list[int]) -> list[int]:
    """SIGKILL the starter, as subprocess.run's timeout does; the pids still alive 30 s on."""
    starter.send_signal(signal.SIGKILL)
    starter.wait(10)
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


@pytest.mark.timeout(120)
def test_killing_the_process_that_started_nodes_leaves_no_node_behind(tmp_path):
    with started(STARTER, str(tmp_path)) as (starter, pids):
        assert len(pids) == 3 and all(alive(p) for p in pids)
        assert all(os.getpgid(p) == p for p in pids)  # each node leads a group of its own
        assert not killed_leaves_none(starter, pids), \
            "nodes outlived the process that started them"

POOL_STARTER = textwrap.dedent("""
    import time
    from invisible.crypto.paillier import djn, vector
    from invisible.crypto.paillier.keys import generate_keypair
    from invisible.crypto.prg import Prg
    public, private = generate_keypair(Prg.from_os())
    decryptors = vector.decryption_pool(private, 2)
    obfuscators = djn.ObfuscatorPool(public, 2)
    obfuscators.take(4)
    list(decryptors.map(abs, [1, 2]))  # both kinds of workers are up
    pids = [*decryptors._processes, *obfuscators._executor._processes]
    print(" ".join(str(p) for p in pids), flush=True)
    time.sleep(600)
""")


@pytest.mark.timeout(120)
def test_a_killed_process_leaves_no_paillier_worker_behind():
    with started(POOL_STARTER) as (starter, pids):
        assert len(pids) >= 3 and all(alive(p) for p in pids)
        assert not killed_leaves_none(starter, pids), "pool workers outlived their process"
