"""A whole federation on one machine: certificates, configs, nodes on loopback.

Used by the demo, the tests and the benchmarks. :func:`write_local_federation`
creates a CA, one certificate per party plus a coordinator, and one TOML per
party and for the coordinator, all on free ports of 127.0.0.1. The nodes
then run either as real processes (:class:`NodeProcesses`, through the CLI)
or as threads of the calling process (:class:`InProcessNodes`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invisible.coordinator.tomlvalues import toml_string, toml_value
from invisible.errors import ConfigError, InvisibleError
from invisible.net.pki import Role, init_pki
from invisible.node.config import load_party_config
from invisible.node.node import PartyNode

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports of the loopback address: all are held open until all are
    chosen, since a port closed at once may be handed out again (two nodes of a federation
    on one port: a handshake with one reached the other, a flaky 12-party test)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


#: Any coordinator may run any job that uses none of a node's data (diagnostics, a dealer's
#: service), of any size.
OPEN_NODE_POLICY: dict[str, Any] = {"requesters": ["*"], "kinds": ["*"]}

#: Any coordinator may run any kind on any column, and outputs may go anywhere; k = 10.
OPEN_POLICY: dict[str, Any] = {
    "min_rows": 10, "recipients": ["*"],
    "allow": [{"requesters": ["*"], "kinds": ["*"], "columns": ["*"]}],
}


@dataclass(frozen=True)
class LocalDataset:
    path: Path
    columns: Mapping[str, str]
    #: The dataset's policy table (see invisible.metering.policy); None writes none.
    policy: Mapping[str, Any] | None = field(default_factory=lambda: dict(OPEN_POLICY))


@dataclass(frozen=True)
class LocalLayout:
    directory: Path
    party_configs: dict[str, Path]
    coordinator_configs: dict[str, Path]
    addresses: dict[str, str]
    dealer_configs: dict[str, Path] = field(default_factory=dict)

    @property
    def coordinator_config(self) -> Path:
        """The first coordinator's config."""
        return next(iter(self.coordinator_configs.values()))


def write_local_federation(
    directory: Path,
    parties: Sequence[str],
    datasets: Mapping[str, Mapping[str, LocalDataset]] | None = None,
    *,
    coordinators: Sequence[str] = ("coordinator",),
    dealers: Sequence[str] = (),
    limits: Mapping[str, float | int] | None = None,
    node_policy: Mapping[str, Any] | None = OPEN_NODE_POLICY,
    ports: Sequence[int] | None = None,
) -> LocalLayout:
    """Certificates and TOML configs for `parties`, dealers and coordinators on loopback.

    `ports`: one per party then per dealer, in that order (default: free ones)."""
    nodes = [*parties, *dealers]
    chosen = list(ports) if ports is not None else free_ports(len(nodes))
    if len(chosen) < len(nodes) or not all(
            isinstance(p, int) and 0 < p < 65536 for p in chosen[:len(nodes)]):
        raise ConfigError(f"ports: give {len(nodes)} ports (1-65535), one per party then per "
                          "dealer")
    directory.mkdir(parents=True, exist_ok=True)
    pki = directory / "pki"
    init_pki(pki, list(parties), list(coordinators), list(dealers), overwrite=True)
    addresses = {p: f"{LOOPBACK}:{port}" for p, port in zip(nodes, chosen, strict=False)}
    dealer_lines = ["[dealers]", *[f"{d} = {toml_string(addresses[d])}" for d in dealers], ""]
    limit_lines = [f"{k} = {v}" for k, v in (limits or {}).items()]
    policy_lines = ([] if node_policy is None else
                    ["[policy]", *[f"{k} = {toml_value(v)}" for k, v in node_policy.items()], ""])
    party_configs, dealer_configs = {}, {}
    for dealer in dealers:  # a dealer's peers are the parties; it holds no data
        path = directory / f"{dealer}.toml"
        path.write_text("\n".join([
            "[party]", f"id = {toml_string(dealer)}", f"listen = {toml_string(addresses[dealer])}",
            "", "[tls]", f"ca = {toml_string(str(pki / 'ca.pem'))}",
            f"cert = {toml_string(str(pki / f'{dealer}.pem'))}",
            f"key = {toml_string(str(pki / f'{dealer}.key'))}", "", "[peers]",
            *[f"{p} = {toml_string(addresses[p])}" for p in parties],
            "", "[limits]", *limit_lines, "", *policy_lines,
        ]))
        dealer_configs[dealer] = path
    for party in parties:
        lines = [
            "[party]", f"id = {toml_string(party)}", f"listen = {toml_string(addresses[party])}",
            "", "[tls]", f"ca = {toml_string(str(pki / 'ca.pem'))}",
            f"cert = {toml_string(str(pki / f'{party}.pem'))}",
            f"key = {toml_string(str(pki / f'{party}.key'))}", "", "[peers]",
            *[f"{p} = {toml_string(addresses[p])}" for p in parties if p != party],
            "", *dealer_lines, "[limits]", *limit_lines, "", *policy_lines,
        ]
        for dataset_id, dataset in (datasets or {}).get(party, {}).items():
            columns = ", ".join(f"{c} = {toml_string(t)}" for c, t in dataset.columns.items())
            lines += [f"[datasets.{dataset_id}]", f"path = {toml_string(str(dataset.path))}",
                      f"columns = {{ {columns} }}"]
            if dataset.policy is not None:
                lines.append(f"policy = {toml_value(dataset.policy)}")
            lines.append("")
        path = directory / f"{party}.toml"
        path.write_text("\n".join(lines))
        party_configs[party] = path
    coordinator_configs = {}
    for coordinator in coordinators:
        path = directory / f"{coordinator}.toml"
        path.write_text("\n".join([
            "[coordinator]", f"id = {toml_string(coordinator)}",
            f"receipts_dir = {toml_string(str(directory / f'{coordinator}-receipts'))}", "",
            "[tls]", f"ca = {toml_string(str(pki / 'ca.pem'))}",
            f"cert = {toml_string(str(pki / f'{coordinator}.pem'))}",
            f"key = {toml_string(str(pki / f'{coordinator}.key'))}", "",
            "[parties]", *[f"{p} = {toml_string(addresses[p])}" for p in parties],
            "", *dealer_lines, "[limits]", *limit_lines, "",
        ]))
        coordinator_configs[coordinator] = path
    return LocalLayout(directory, party_configs, coordinator_configs, addresses, dealer_configs)


class InProcessNodes:
    """Party nodes as threads of this process (real gRPC and mTLS, no subprocesses)."""

    def __init__(self, layout: LocalLayout) -> None:
        self.nodes = {p: PartyNode(load_party_config(c)) for p, c in layout.party_configs.items()}
        self.nodes.update({d: PartyNode(load_party_config(c), role=Role.DEALER)
                           for d, c in layout.dealer_configs.items()})

    def __enter__(self) -> InProcessNodes:
        for node in self.nodes.values():
            node.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes.values():
            node.stop(grace_s=0.5)


class NodeProcesses:
    """Party nodes as separate `invisible node serve` processes; always stopped on exit."""

    def __init__(self, layout: LocalLayout, *, log_dir: Path | None = None) -> None:
        self.layout = layout
        self.log_dir = log_dir or layout.directory
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> NodeProcesses:
        # Each node dies with this process, even killed (it watches its parent), and runs in
        # a process group of its own (a terminal's Ctrl-C reaches this process, which stops
        # the nodes in order).
        env = dict(os.environ, PYTHONUNBUFFERED="1", INVISIBLE_EXIT_WITH_PARENT=str(os.getpid()))
        roles = [(p, c, "party") for p, c in self.layout.party_configs.items()]
        roles += [(d, c, "dealer") for d, c in self.layout.dealer_configs.items()]
        for party, config, role in roles:
            log = (self.log_dir / f"{party}.log").open("wb")
            self.processes[party] = subprocess.Popen(
                [sys.executable, "-m", "invisible", "node", "serve", "--config", str(config),
                 "--role", role],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
            log.close()
        return self

    def check_alive(self) -> None:
        for party, process in self.processes.items():
            code = process.poll()
            if code is not None:
                tail = self.log_tail(party)
                raise InvisibleError(f"node '{party}' exited with code {code}: {tail}")

    def log_tail(self, party: str, lines: int = 5) -> str:
        path = self.log_dir / f"{party}.log"
        with contextlib.suppress(OSError):
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        return ""

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        """SIGTERM every node, then SIGKILL any still running after the timeout."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes = {}
        for party, process in self.processes.items():
            try:
                codes[party] = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[party] = process.wait()
        return codes

    def __enter__(self) -> NodeProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
