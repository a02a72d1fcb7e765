"""A whole federation on one machine: certificates, configs, nodes on loopback.

Used by the demo, the tests and the benchmarks. :func:`write_local_federation`
creates a CA, one certificate per party plus a coordinator, and one TOML per
party and for the coordinator, on 127.0.0.1. The nodes then run either as
real processes (:class:`NodeProcesses`, through the CLI) or as threads of the
calling process (:class:`InProcessNodes`).

Ports: by default every node listens on port 0, so the system gives each a
free port as it binds (a port picked beforehand and bound later can be taken
in between). Starting the nodes then publishes the ports they got: every
config's address book is rewritten (:func:`publish_addresses`) and each node
reloads its peers (`SIGHUP` to a node process, :meth:`PartyNode.reload` in
process) before anyone runs a job.
"""

from __future__ import annotations

import contextlib
import os
import re
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
#: How long a node process may take to start serving (imports and loading its data).
START_TIMEOUT_S = 120.0


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
    #: Approvers' configs (see invisible.coordinator.approver).
    approver_configs: dict[str, Path] = field(default_factory=dict)

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
    approvers: Sequence[str] = (),
) -> LocalLayout:
    """Certificates and TOML configs for `parties`, dealers and coordinators on loopback.

    `ports`: one per party then per dealer, in that order (default: port 0 for each, the
    port it binds published when the nodes start)."""
    nodes = [*parties, *dealers]
    chosen = [0] * len(nodes) if ports is None else list(ports)
    if ports is not None and (len(chosen) < len(nodes) or not all(
            isinstance(p, int) and 0 < p < 65536 for p in chosen[:len(nodes)])):
        raise ConfigError(f"ports: give {len(nodes)} ports (1-65535), one per party then per "
                          "dealer")
    directory.mkdir(parents=True, exist_ok=True)
    pki = directory / "pki"
    init_pki(pki, list(parties), list(coordinators), list(dealers), overwrite=True,
             approvers=list(approvers))
    addresses = {p: f"{LOOPBACK}:{port}" for p, port in zip(nodes, chosen, strict=False)}
    dealer_lines = ["[dealers]", *[f"{d} = {toml_string(addresses[d])}" for d in dealers], ""]
    limit_lines = [f"{k} = {v}" for k, v in (limits or {}).items()]
    policy_lines = ([] if node_policy is None else
                    ["[policy]", *[f"{k} = {toml_value(v)}" for k, v in node_policy.items()], ""])
    party_configs, dealer_configs = {}, {}

    def tls_lines(node: str) -> list[str]:
        return ["[tls]", f"ca = {toml_string(str(pki / 'ca.pem'))}",
                f"cert = {toml_string(str(pki / f'{node}.pem'))}",
                f"key = {toml_string(str(pki / f'{node}.key'))}",
                f"crl = {toml_string(str(pki / 'ca.crl'))}"]

    for dealer in dealers:  # a dealer's peers are the parties; it holds no data
        path = directory / f"{dealer}.toml"
        path.write_text("\n".join([
            "[party]", f"id = {toml_string(dealer)}", f"listen = {toml_string(addresses[dealer])}",
            "", *tls_lines(dealer), "", "[peers]",
            *[f"{p} = {toml_string(addresses[p])}" for p in parties],
            "", "[limits]", *limit_lines, "", *policy_lines,
        ]))
        dealer_configs[dealer] = path
    for party in parties:
        lines = [
            "[party]", f"id = {toml_string(party)}", f"listen = {toml_string(addresses[party])}",
            "", *tls_lines(party), "", "[peers]",
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
    coordinator_configs: dict[str, Path] = {}
    approver_configs: dict[str, Path] = {}
    for coordinator in [*coordinators, *approvers]:
        section = "approver" if coordinator in approvers else "coordinator"
        path = directory / f"{coordinator}.toml"
        path.write_text("\n".join([
            f"[{section}]", f"id = {toml_string(coordinator)}",
            f"receipts_dir = {toml_string(str(directory / f'{coordinator}-receipts'))}", "",
            "[tls]", f"ca = {toml_string(str(pki / 'ca.pem'))}",
            f"cert = {toml_string(str(pki / f'{coordinator}.pem'))}",
            f"key = {toml_string(str(pki / f'{coordinator}.key'))}", "",
            "[parties]", *[f"{p} = {toml_string(addresses[p])}" for p in parties],
            "", *dealer_lines, "[limits]", *limit_lines, "",
        ]))
        (approver_configs if coordinator in approvers else coordinator_configs)[coordinator] = path
    return LocalLayout(directory, party_configs, coordinator_configs, addresses, dealer_configs,
                       approver_configs)


#: The tables of a local federation's configs that map node ids to addresses.
_ADDRESS_TABLES = ("peers", "dealers", "parties")


def publish_addresses(layout: LocalLayout, bound: Mapping[str, str]) -> None:
    """Write the addresses the nodes `bound` into every config's address tables (a node's
    own `listen` stays as it was: port 0 binds a fresh port at each start) and into
    `layout.addresses`."""
    layout.addresses.update(bound)
    configs = [*layout.party_configs.values(), *layout.dealer_configs.values(),
               *layout.coordinator_configs.values(), *layout.approver_configs.values()]
    for path in configs:
        lines, table = [], ""
        for line in path.read_text().splitlines():
            if line.startswith("[") and line.endswith("]"):
                table = line.strip("[]")
            name, sep, _ = line.partition(" = ")
            if sep and table in _ADDRESS_TABLES and name in bound:
                line = f"{name} = {toml_string(bound[name])}"
            lines.append(line)
        path.write_text("\n".join(lines) + "\n")


class InProcessNodes:
    """Party nodes as threads of this process (real gRPC and mTLS, no subprocesses).

    `nodes` replaces the nodes made from the layout's configs (a test that starts one with
    other options); each binds its port when made, and the ports are published before any
    node starts."""

    def __init__(self, layout: LocalLayout, nodes: Mapping[str, PartyNode] | None = None,
                 ) -> None:
        self.layout = layout
        if nodes is not None:
            self.nodes = dict(nodes)
            return
        self.nodes = {p: PartyNode(load_party_config(c)) for p, c in layout.party_configs.items()}
        self.nodes.update({d: PartyNode(load_party_config(c), role=Role.DEALER)
                           for d, c in layout.dealer_configs.items()})

    def __enter__(self) -> InProcessNodes:
        bound = {name: node.address for name, node in self.nodes.items()}
        if any(self.layout.addresses.get(n) != a for n, a in bound.items()):
            publish_addresses(self.layout, bound)
            for node in self.nodes.values():
                node.reload()
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
        self._publish_ports()
        return self

    def _lines(self, party: str, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        with contextlib.suppress(OSError):
            text = (self.log_dir / f"{party}.log").read_text(errors="replace")
            return [m for m in map(pattern.match, text.splitlines()) if m]
        return []

    def _wait_for(self, pattern: str, count: Mapping[str, int]) -> dict[str, re.Match[str]]:
        """The `count[party]`-th line matching `pattern` in each running node's log, as each
        prints it (a node that exits meanwhile is left to `check_alive` to report)."""
        compiled = re.compile(pattern)
        found: dict[str, re.Match[str]] = {}
        deadline, waiting = time.monotonic() + START_TIMEOUT_S, list(self.processes)
        while time.monotonic() < deadline:
            for party in self.processes:
                matches = self._lines(party, compiled) if party not in found else []
                if len(matches) >= count[party]:
                    found[party] = matches[count[party] - 1]
            waiting = [p for p, proc in self.processes.items()
                       if p not in found and proc.poll() is None]
            if not waiting:
                return found
            time.sleep(0.05)
        raise InvisibleError(f"node(s) {', '.join(waiting)} did not say '{pattern}' within "
                             f"{START_TIMEOUT_S:g} s")

    def _publish_ports(self) -> None:
        """Wait until every node serves, publish the ports they bound, and have each node
        reload its peers (and wait until it has)."""
        serving = self._wait_for(r"invisible node '.*' \(\w+\) serving on (\S+)$",
                                 dict.fromkeys(self.processes, 1))
        bound = {party: match.group(1) for party, match in serving.items()}
        if all(self.layout.addresses.get(p) == a for p, a in bound.items()):
            return
        reloaded = r"invisible node '.*' reloaded"
        before = {p: len(self._lines(p, re.compile(reloaded))) for p in serving}
        publish_addresses(self.layout, bound)
        for party in serving:
            self.processes[party].send_signal(signal.SIGHUP)
        self._wait_for(reloaded, {p: before.get(p, 0) + 1 for p in self.processes})

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
