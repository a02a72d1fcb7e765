"""Mutual TLS: who may talk to whom, and the clear errors when they may not."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import numpy as np
import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, free_port, write_local_federation
from invisible.errors import (
    ConfigError,
    PartyUnavailableError,
    PeerAuthenticationError,
    PolicyError,
)
from invisible.jobspec import JobSpec
from invisible.net.client import NodeClient
from invisible.net.pki import CertificateAuthority, Identity, Role
from invisible.net.server import HealthServicer, build_server
from invisible.net.tls import TlsFiles, TlsMaterial
from invisible.node.config import load_party_config
from invisible.node.node import PartyNode


def tls_of(pki: Path, name: str, role: Role | None = None) -> TlsMaterial:
    return TlsMaterial.load(
        TlsFiles(pki / "ca.pem", pki / f"{name}.pem", pki / f"{name}.key"), expected_role=role
    )


def serve_health(tls: TlsMaterial):
    """A bare server presenting `tls`, whatever its role; returns (server, address)."""
    address = f"127.0.0.1:{free_port()}"
    server, _ = build_server(
        tls, address, health=HealthServicer(tls, list), exchange=None, jobs=None
    )
    server.start()
    return server, address


@pytest.fixture
def pki(layout) -> Path:
    return layout.directory / "pki"


def test_nodes_reach_each_other_and_the_coordinator_reaches_all(layout):
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        health = fed.health(timeout_s=10)
        assert {p: h.party_id for p, h in health.items()} == {p: p for p in layout.addresses}
        result = fed.connectivity()
        assert set(result.peers_confirmed["alpha"]) == {"beta", "gamma"}
        assert result.ok


def test_a_peer_certified_by_another_ca_is_refused_at_the_handshake(layout, tmp_path):
    foreign = write_local_federation(tmp_path / "foreign", ["alpha", "beta"])
    ours = tls_of(layout.directory / "pki", "beta", Role.PARTY)
    theirs = tls_of(foreign.directory / "pki", "alpha", Role.PARTY)
    server, address = serve_health(theirs)
    try:
        with NodeClient(ours, "alpha", address, timeout_s=5) as client:
            started = time.monotonic()
            with pytest.raises(PeerAuthenticationError, match="party 'alpha'.*handshake"):
                client.health()
            assert time.monotonic() - started < 5  # refused at once, not at the deadline
    finally:
        server.stop(0)


def test_a_client_certified_by_another_ca_is_refused_by_the_node(layout, tmp_path):
    foreign = write_local_federation(tmp_path / "foreign", ["alpha", "beta"])
    intruder = tls_of(foreign.directory / "pki", "beta", Role.PARTY)
    with InProcessNodes(layout) as nodes:
        address = nodes.nodes["alpha"].address
        with NodeClient(intruder, "alpha", address, timeout_s=5) as client:
            with pytest.raises(PeerAuthenticationError, match="party 'alpha'.*handshake"):
                client.deliver("job-1", "x", b"anything")
        assert nodes.nodes["alpha"].mailbox.pending_jobs() == set()


def test_a_certificate_for_another_party_than_the_one_dialled_fails(pki):
    server, address = serve_health(tls_of(pki, "gamma", Role.PARTY))
    try:
        with NodeClient(tls_of(pki, "alpha"), "beta", address, timeout_s=5) as client:
            with pytest.raises(PeerAuthenticationError, match="party 'beta'"):
                client.health()
    finally:
        server.stop(0)


def test_a_coordinator_certificate_is_never_accepted_as_a_party(pki, layout, tmp_path):
    # A coordinator certificate issued to the very id that is dialled still fails the pin.
    ca = CertificateAuthority.load(pki)
    ca.issue_to(tmp_path, Identity("beta", Role.COORDINATOR))
    (tmp_path / "ca.pem").write_bytes((pki / "ca.pem").read_bytes())
    imposter = tls_of(tmp_path, "beta")
    server, address = serve_health(imposter)
    try:
        with NodeClient(tls_of(pki, "alpha"), "beta", address, timeout_s=5) as client:
            with pytest.raises(PeerAuthenticationError, match="party 'beta'"):
                client.health()
    finally:
        server.stop(0)
    # A node refuses to start with it ...
    config = load_party_config(layout.party_configs["beta"])
    with pytest.raises(ConfigError, match="coordinator certificate"):
        TlsMaterial.load(TlsFiles(config.tls.ca, tmp_path / "beta.pem", tmp_path / "beta.key"),
                         expected_role=Role.PARTY)
    # ... and a node refuses protocol messages from it.
    with InProcessNodes(layout) as nodes:
        with NodeClient(imposter, "alpha", nodes.nodes["alpha"].address, timeout_s=5) as client:
            with pytest.raises(PolicyError, match="needs a party or dealer certificate"):
                client.deliver("job-1", "x", np.zeros(4))
        assert nodes.nodes["alpha"].mailbox.pending_jobs() == set()


def test_only_a_coordinator_may_start_jobs(layout):
    with InProcessNodes(layout) as nodes:
        party_tls = nodes.nodes["beta"].tls
        with NodeClient(party_tls, "alpha", nodes.nodes["alpha"].address, timeout_s=5) as client:
            with pytest.raises(PolicyError, match="needs a coordinator certificate"):
                client.start_job(JobSpec("j1", "connectivity", ("alpha", "beta")))


def test_a_peer_that_is_down_fails_within_the_deadline_naming_the_party(pki):
    address = f"127.0.0.1:{free_port()}"  # nobody listens here
    with NodeClient(tls_of(pki, "alpha"), "beta", address, timeout_s=1.0) as client:
        started = time.monotonic()
        with pytest.raises(PartyUnavailableError, match="party 'beta' is unavailable"):
            client.deliver("job-1", "x", b"hello")
        assert 0.9 < time.monotonic() - started < 4


def test_a_job_naming_an_unknown_peer_is_refused_before_it_runs(layout):
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        with pytest.raises(ConfigError, match="'delta'"):
            fed.clients["alpha"].start_job(JobSpec("j1", "connectivity", ("alpha", "delta")))


@pytest.mark.parametrize("which", ["ca", "cert", "key"])
def test_missing_certificate_key_or_ca_is_named(pki, which):
    files = {"ca": pki / "ca.pem", "cert": pki / "alpha.pem", "key": pki / "alpha.key"}
    files[which] = pki / "nowhere.pem"
    with pytest.raises(ConfigError, match="not found: .*nowhere.pem"):
        TlsMaterial.load(TlsFiles(**files))


def test_unreadable_key_is_named(pki, monkeypatch):
    """A key the node may not read. Root reads any file whatever its mode (CI runs as root),
    so the read itself is made to fail as the operating system would fail it."""
    key = pki / "alpha.key"
    if os.geteuid() != 0:
        key.chmod(0)
    else:
        read_bytes = Path.read_bytes

        def refused(path: Path) -> bytes:
            if path == key:
                raise PermissionError(13, "Permission denied", str(path))
            return read_bytes(path)

        monkeypatch.setattr(Path, "read_bytes", refused)
    with pytest.raises(ConfigError, match="unreadable: .*alpha.key \\(Permission denied\\)"):
        tls_of(pki, "alpha")


def test_a_key_path_that_cannot_be_read_is_named(pki, tmp_path):
    files = TlsFiles(pki / "ca.pem", pki / "alpha.pem", tmp_path)  # a folder, not a file
    with pytest.raises(ConfigError, match="private key file unreadable"):
        TlsMaterial.load(files)


def test_garbage_or_mismatched_key_is_named(pki):
    (pki / "alpha.key").write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key: .*alpha.key"):
        tls_of(pki, "alpha")
    (pki / "alpha.key").write_bytes((pki / "beta.key").read_bytes())
    with pytest.raises(ConfigError, match="does not belong to certificate"):
        tls_of(pki, "alpha")


def test_a_key_never_appears_in_errors_or_reprs(pki):
    import base64

    from cryptography.hazmat.primitives import serialization

    tls = tls_of(pki, "alpha")
    key = serialization.load_pem_private_key(tls.key_pem, password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    forms = [line for line in tls.key_pem.decode().splitlines() if "PRIVATE KEY" not in line]
    forms += [der.hex()[:32], der.hex()[-32:], base64.b64encode(der).decode()[-24:],
              repr(der)[2:30]]
    for text in (repr(tls), str(tls), f"{tls!r:>10}"):
        for form in forms:
            assert form not in text


def test_party_node_refuses_a_certificate_of_another_party(layout, tmp_path):
    text = layout.party_configs["alpha"].read_text().replace("alpha.pem", "beta.pem").replace(
        "alpha.key", "beta.key")
    path = tmp_path / "alpha.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="issued to 'beta'"):
        PartyNode(load_party_config(path))


@pytest.mark.parametrize("renewable", [False, True], ids=["fixed", "renewable"])
def test_a_client_without_a_certificate_is_refused_at_the_handshake(pki, renewable):
    """Both kinds of server credentials require a client certificate: TLS alone, before any
    RPC, refuses a client that has none (and serves one that has the CA's)."""
    tls = tls_of(pki, "alpha")
    server, port = build_server(tls if not renewable else (lambda: tls), "127.0.0.1:0",
                                health=HealthServicer(tls, list), exchange=None, jobs=None)
    server.start()

    def first_bytes(with_certificate: bool) -> bytes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(pki / "ca.pem")
        if with_certificate:
            context.load_cert_chain(pki / "beta.pem", pki / "beta.key")
        context.check_hostname = False
        context.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw) as conn:
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the HTTP/2 preface
            return conn.recv(9)  # TLS 1.3: a refused client certificate shows at the first read

    try:
        assert len(first_bytes(True)) > 0  # the server's SETTINGS frame
        with pytest.raises((ssl.SSLError, ConnectionError)):
            if not first_bytes(False):
                raise ConnectionResetError("closed without a word")
    finally:
        server.stop(None)
