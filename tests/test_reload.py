"""Ports bound, not guessed, and a node that takes new peers and policies without a restart.

A local federation's nodes listen on port 0: each gets a free port from the system as it
binds, and starting them publishes the ports into every config (a port picked first and
bound later could be taken in between; two nodes once shared one). A node reloads its
peers, dealers and policies from its config file (`SIGHUP` to `invisible node serve`,
`PartyNode.reload` in process); a file that does not load changes nothing.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import (
    InProcessNodes,
    NodeProcesses,
    publish_addresses,
    write_local_federation,
)
from invisible.errors import ConfigError, PartyUnavailableError, PolicyError
from invisible.net.client import NodeClient
from invisible.net.tls import TlsFiles, TlsMaterial
from invisible.node.config import load_party_config
from invisible.node.node import PartyNode
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets

PARTIES = tuple(SAMPLE_COLUMNS)
INPUTS = {p: (SAMPLE_DATASET, "monthly_spend") for p in PARTIES}
OPEN = 'allow = [{ requesters = ["*"]'
CLOSED = 'allow = [{ requesters = ["auditor"]'


@pytest.fixture
def layout(tmp_path):
    return write_local_federation(tmp_path / "federation", PARTIES, sample_datasets())


def ports_in(text: str) -> list[int]:
    return [int(p) for p in re.findall(r'= "127\.0\.0\.1:(\d+)"', text)]


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.timeout(120)
def test_nodes_bind_port_0_and_every_config_names_the_ports_they_got(layout):
    assert set(layout.addresses.values()) == {"127.0.0.1:0"}
    assert ports_in(layout.party_configs["bank"].read_text()) == [0, 0, 0]
    with NodeProcesses(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        ports = {p: int(a.rsplit(":", 1)[1]) for p, a in layout.addresses.items()}
        assert len(set(ports.values())) == len(PARTIES) and 0 not in ports.values()
        for party, config in layout.party_configs.items():
            # its own listen stays 0; each peer's address is the port that peer bound
            peers = [ports[p] for p in PARTIES if p != party]
            assert ports_in(config.read_text()) == [0, *peers]
        assert sorted(ports_in(layout.coordinator_config.read_text())) == sorted(ports.values())
        assert fed.connectivity().ok  # every pair reached each other on the published ports
        nodes.check_alive()
    # a second start binds fresh ports and publishes them again
    with NodeProcesses(layout), Federation.from_config(layout.coordinator_config) as fed:
        assert fed.secure_sum(INPUTS, 1e5).total is not None


@pytest.mark.timeout(120)
def test_a_reload_applies_a_new_policy_and_a_broken_file_changes_nothing(layout):
    config = layout.party_configs["bank"]
    with InProcessNodes(layout) as nodes, \
            Federation.from_config(layout.coordinator_config) as fed:
        bank = nodes.nodes["bank"]
        fed.secure_sum(INPUTS, 1e5)
        edit(config, OPEN, CLOSED)
        fed.secure_sum(INPUTS, 1e5)  # the file alone changes nothing: the node reads it once
        assert bank.reload() == []  # no peer moved
        with pytest.raises(PolicyError, match="party 'bank' refused.*rule 'not-allowed'"):
            fed.secure_sum(INPUTS, 1e5)
        edit(config, CLOSED, OPEN)
        edit(config, 'id = "bank"', 'id = "bank"\nid = "bank"')  # not TOML any more
        with pytest.raises(ConfigError, match="bank.toml"):
            bank.reload()
        with pytest.raises(PolicyError, match="rule 'not-allowed'"):  # still the last policy
            fed.secure_sum(INPUTS, 1e5)
        edit(config, 'id = "bank"\nid = "bank"', 'id = "bank"')
        bank.reload()
        fed.secure_sum(INPUTS, 1e5)


@pytest.mark.timeout(120)
def test_a_peer_that_moved_is_reached_at_its_new_port_after_a_reload(layout):
    with InProcessNodes(layout) as nodes, \
            Federation.from_config(layout.coordinator_config) as fed:
        assert fed.connectivity().ok
        nodes.nodes["telco"].stop()
        moved = PartyNode(load_party_config(layout.party_configs["telco"]))  # a new port
        nodes.nodes["telco"] = moved
        assert moved.address != layout.addresses["telco"]
        publish_addresses(layout, {"telco": moved.address})
        moved.start()
        assert sorted(nodes.nodes["bank"].reload()) == ["telco"]
        assert nodes.nodes["hospital"].reload() == ["telco"]
        with Federation.from_config(layout.coordinator_config) as again:
            assert again.connectivity().ok
        # the coordinator that read the old address book still dials the old port
        with pytest.raises(PartyUnavailableError, match="party 'telco'"):
            fed.health(timeout_s=1)


def test_an_address_not_published_yet_fails_at_once_naming_the_party(layout):
    pki = layout.directory / "pki"
    tls = TlsMaterial.load(TlsFiles(pki / "ca.pem", pki / "bank.pem", pki / "bank.key"))
    client = NodeClient(tls, "telco", "127.0.0.1:0", timeout_s=30)
    started = time.monotonic()
    with pytest.raises(PartyUnavailableError, match="party 'telco'.*address is not known yet"):
        client.health()
    assert time.monotonic() - started < 5  # not after the 30 s deadline
    client.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["SIGHUP", "invisible node reload"])
def test_a_signal_or_node_reload_makes_a_node_process_reload_and_say_so(layout, how):
    telco = layout.party_configs["telco"]
    with NodeProcesses(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        fed.secure_sum(INPUTS, 1e5)
        edit(telco, OPEN, CLOSED)
        if how == "SIGHUP":
            nodes.processes["telco"].send_signal(signal.SIGHUP)
        else:
            asked = subprocess.run([sys.executable, "-m", "invisible", "node", "reload",
                                    "--config", str(telco)], capture_output=True, text=True,
                                   timeout=60)
            assert asked.returncode == 0, asked.stderr
            assert f"(pid {nodes.processes['telco'].pid}) to read {telco} again" in asked.stdout
        deadline = time.monotonic() + 30
        while "reloaded" not in nodes.log_tail("telco", 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "invisible node 'telco' reloaded" in nodes.log_tail("telco", 1)
        with pytest.raises(PolicyError, match="party 'telco' refused.*rule 'not-allowed'"):
            fed.secure_sum(INPUTS, 1e5)
        nodes.check_alive()


def test_node_reload_refuses_when_no_node_serves_the_config(layout, tmp_path):
    telco = layout.party_configs["telco"]

    def reload() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "invisible", "node", "reload", "--config",
                               str(telco)], capture_output=True, text=True, timeout=60)

    refused = reload()
    assert refused.returncode == 2 and "no node serving" in refused.stderr
    # a pid left by a node that died, now some other process: never signalled
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file = load_party_config(telco).ledger.path.with_suffix(".sqlite.pid")
        pid_file.write_text(f"{other.pid}\n")
        refused = reload()
        assert refused.returncode == 2
        assert f"names pid {other.pid}, which is not a node serving" in refused.stderr
        assert other.poll() is None  # still running: no SIGHUP reached it
    finally:
        other.kill()
        other.wait()
