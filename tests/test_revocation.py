"""Revocation: the CA's signed list of revoked certificates, enforced by every node.

Guards `CertificateAuthority.revoke` / `invisible pki revoke` (the list signed anew, each
serial kept with its first date and reason, a list that is not the CA's refused),
`Revocations` (a listed certificate refused on every call, the first refusal recorded,
the file read again when it changes, a broken file leaving the list in force), and, over
gRPC with mTLS, nodes refusing a revoked party and a revoked coordinator within a second
of the list changing, while a party renewed with a second certificate (overlap) goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.errors import ConfigError, InvisibleError, PolicyError
from invisible.metering.audit import verify_ledger
from invisible.metering.signing import load_public_key
from invisible.net import tls as tls_module
from invisible.net.pki import (
    CRL_VALIDITY_DAYS,
    CertificateAuthority,
    Identity,
    Role,
    init_ca,
    init_pki,
)
from invisible.net.tls import Revocations, TlsFiles, days_left
from invisible.node.config import load_party_config
from invisible.node.node import PartyNode
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets

ROOT = Path(__file__).resolve().parent.parent
PARTIES = tuple(SAMPLE_COLUMNS)
INPUTS = {p: (SAMPLE_DATASET, "monthly_spend") for p in PARTIES}


class Context:
    """The part of a gRPC servicer context that names the caller."""

    def __init__(self, pem: bytes) -> None:
        self._auth = {"x509_pem_cert": [pem]}

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


@pytest.fixture
def pki(tmp_path) -> Path:
    init_pki(tmp_path, ["alpha", "beta"])
    return tmp_path


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def listed(path: Path) -> dict[int, x509.ReasonFlags]:
    crl = x509.load_pem_x509_crl(path.read_bytes())
    return {e.serial_number: e.extensions.get_extension_for_class(x509.CRLReason).value.reason
            for e in crl}


def test_a_new_ca_lists_nothing_and_each_revocation_signs_the_list_anew(pki):
    ca = CertificateAuthority.load(pki)
    assert listed(pki / "ca.crl") == {}
    ca.revoke(pki, serial(pki / "alpha.pem"), "key-compromise")
    first = x509.load_pem_x509_crl((pki / "ca.crl").read_bytes())
    ca.revoke(pki, serial(pki / "beta.pem"), "superseded")
    ca.revoke(pki, serial(pki / "alpha.pem"), "unspecified")  # a second time: kept as it was
    crl = x509.load_pem_x509_crl((pki / "ca.crl").read_bytes())
    assert listed(pki / "ca.crl") == {serial(pki / "alpha.pem"): x509.ReasonFlags.key_compromise,
                                      serial(pki / "beta.pem"): x509.ReasonFlags.superseded}
    assert [ext.critical for entry in crl for ext in entry.extensions] == [False, False]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 4
    assert crl.is_signature_valid(ca.certificate.public_key())
    alpha = crl.get_revoked_certificate_by_serial_number(serial(pki / "alpha.pem"))
    assert alpha.revocation_date_utc == first.get_revoked_certificate_by_serial_number(
        serial(pki / "alpha.pem")).revocation_date_utc
    with pytest.raises(ConfigError, match=(
            r"^unknown revocation reason 'lost' \(one of key-compromise, superseded, "
            r"cessation-of-operation, affiliation-changed, unspecified\)$")):
        ca.revoke(pki, 1, "lost")


def test_a_ca_without_a_list_starts_one_numbered_1_dated_in_utc(pki, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Shanghai")  # a local clock 8 hours off UTC
    time.tzset()
    try:
        (pki / "ca.crl").unlink()
        CertificateAuthority.load(pki).revoke(pki, 77)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    crl = x509.load_pem_x509_crl((pki / "ca.crl").read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    now = dt.datetime.now(dt.UTC)
    when = crl.get_revoked_certificate_by_serial_number(77).revocation_date_utc
    assert abs((when - now).total_seconds()) < 120
    # issued five minutes back (a node whose clock is a little behind still takes it), due
    # for renewal CRL_VALIDITY_DAYS on; both in UTC whatever the local zone
    assert abs((crl.last_update_utc - (now - dt.timedelta(minutes=5))).total_seconds()) < 30
    assert abs((crl.next_update_utc - (now + dt.timedelta(days=CRL_VALIDITY_DAYS)))
               .total_seconds()) < 60
    # RFC 5280: a conforming CA marks the CRL number and authority key identifier
    # non-critical (a critical one would make some readers refuse the list)
    assert [(e.oid, e.critical) for e in crl.extensions] == [
        (x509.ExtensionOID.CRL_NUMBER, False), (x509.ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False)]
    assert not list(pki.glob("*.tmp"))  # written whole, then renamed into place


def test_an_entry_without_a_reason_is_kept_as_unspecified(pki):
    ca = CertificateAuthority.load(pki)
    now = dt.datetime.now(dt.UTC)
    bare = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
            .last_update(now).next_update(now + dt.timedelta(days=1))
            .add_extension(x509.CRLNumber(5), critical=False)
            .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(41)
                                     .revocation_date(now).build())
            .sign(ca.key, hashes.SHA256()))
    (pki / "ca.crl").write_bytes(bare.public_bytes(serialization.Encoding.PEM))
    ca.revoke(pki, 42, "superseded")
    assert listed(pki / "ca.crl") == {41: x509.ReasonFlags.unspecified,
                                      42: x509.ReasonFlags.superseded}


def test_a_list_that_is_not_the_ca_s_is_refused_at_start_and_never_replaces_one(pki, tmp_path):
    other = tmp_path / "other"
    init_ca(other)
    ca_pem = (pki / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match=f"^{other / 'ca.crl'} is not signed by the "
                                          "federation's CA$"):
        Revocations(ca_pem, other / "ca.crl")
    tampered = bytearray(x509.load_pem_x509_crl((pki / "ca.crl").read_bytes())
                         .public_bytes(serialization.Encoding.DER))
    tampered[-1] ^= 0x01  # the signature's last byte
    (tmp_path / "bad.crl").write_bytes(bytes(tampered))
    with pytest.raises(ConfigError, match="bad.crl is not signed by the federation's CA|"
                                          "bad.crl is not a certificate revocation list"):
        Revocations(ca_pem, tmp_path / "bad.crl")
    (tmp_path / "junk.crl").write_bytes(b"not a list")
    with pytest.raises(ConfigError, match="junk.crl is not a certificate revocation list"):
        Revocations(ca_pem, tmp_path / "junk.crl")
    with pytest.raises(ConfigError, match="revocation list unreadable: .*missing.crl"):
        Revocations(ca_pem, tmp_path / "missing.crl")
    # the other CA's list signs nothing here: revoking with this CA refuses to build on it
    (pki / "ca.crl").write_bytes((other / "ca.crl").read_bytes())
    with pytest.raises(ConfigError, match=f"^{pki / 'ca.crl'} is not signed by the "
                                          "federation's CA$"):
        CertificateAuthority.load(pki).revoke(pki, 5)


def test_a_list_loads_as_pem_or_der_and_must_be_the_ca_s_by_name_and_numbered(pki):
    ca = CertificateAuthority.load(pki)
    ca.revoke(pki, 77, "superseded")
    ca_pem = (pki / "ca.pem").read_bytes()
    crl = x509.load_pem_x509_crl((pki / "ca.crl").read_bytes())
    (pki / "der.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    (pki / "padded.crl").write_bytes(b"\n  \n" + (pki / "ca.crl").read_bytes())
    for name in ("der.crl", "padded.crl"):
        assert Revocations(ca_pem, pki / name).serials == frozenset({77})
    now = dt.datetime.now(dt.UTC)

    def signed_by_ca(issuer: x509.Name, numbered: bool) -> Path:
        builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer)
                   .last_update(now).next_update(now + dt.timedelta(days=1)))
        if numbered:
            builder = builder.add_extension(x509.CRLNumber(9), critical=False)
        path = pki / f"{numbered}-{len(list(pki.glob('*.crl')))}.crl"
        path.write_bytes(builder.sign(ca.key, hashes.SHA256())
                         .public_bytes(serialization.Encoding.PEM))
        return path

    # the CA's key, another issuer's name: not the CA's list
    other = signed_by_ca(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "other")]),
                         True)
    with pytest.raises(ConfigError, match=f"^{other} is not signed by the federation's CA$"):
        Revocations(ca_pem, other)
    unnumbered = signed_by_ca(ca.certificate.subject, False)
    with pytest.raises(ConfigError, match=f"^{unnumbered} has no CRL number \\(make it with "
                                          "`invisible pki revoke`\\)$"):
        Revocations(ca_pem, unnumbered)


def test_a_revoked_certificate_is_refused_on_every_call_and_recorded_once(pki, caplog):
    ca = CertificateAuthority.load(pki)
    seen: list[tuple[Identity, int, bool]] = []
    revocations = Revocations((pki / "ca.pem").read_bytes(), pki / "ca.crl",
                              lambda *call: seen.append(call))
    revocations.RECHECK_S = 0.0
    alpha, beta = (pki / "alpha.pem").read_bytes(), (pki / "beta.pem").read_bytes()
    revocations.check(Context(alpha))
    ca.revoke(pki, serial(pki / "alpha.pem"), "key-compromise")
    for _ in range(3):  # read again because the file changed; refused every time
        with pytest.raises(PolicyError, match=f"the certificate of alpha .party. .serial "
                                              f"{serial(pki / 'alpha.pem'):x}. is revoked"):
            revocations.check(Context(alpha))
    revocations.check(Context(beta))  # only the listed serial
    assert seen == [(Identity("alpha", Role.PARTY), serial(pki / "alpha.pem"), first)
                    for first in (True, False, False)]
    # a new file that does not load leaves the list in force, and says why
    good = (pki / "ca.crl").read_bytes()
    (pki / "ca.crl").write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    with pytest.raises(PolicyError):
        revocations.check(Context(alpha))
    assert "the list loaded before stays in force" in caplog.text
    (pki / "ca.crl").write_bytes(good)
    assert revocations.number == 2


def test_a_list_past_its_next_update_is_still_enforced_with_a_warning(pki, caplog):
    revocations = Revocations((pki / "ca.pem").read_bytes(), pki / "ca.crl")
    assert not revocations.stale()
    assert revocations.stale(dt.datetime.now(dt.UTC) + dt.timedelta(days=400))
    due = x509.load_pem_x509_crl((pki / "ca.crl").read_bytes()).next_update_utc
    assert revocations.describe() == (f"revocation list {pki / 'ca.crl'}: number 1, 0 "
                                      f"certificate(s) revoked; next update due {due:%Y-%m-%d}")
    assert not revocations.stale(due)  # due at that instant, overdue only after it
    assert revocations.stale(due + dt.timedelta(microseconds=1))
    revocations.next_update = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert revocations.describe() == (f"revocation list {pki / 'ca.crl'}: number 1, 0 "
                                      "certificate(s) revoked; next update due 2026-01-02 "
                                      "(overdue: ask the CA for the next)")
    revocations.next_update = None  # a list without one (RFC 5280 allows it) is never overdue
    assert revocations.describe() == (f"revocation list {pki / 'ca.crl'}: number 1, 0 "
                                      "certificate(s) revoked")
    assert Revocations((pki / "ca.pem").read_bytes(), None).describe() == (
        "revocation list: none (no [tls] crl: no certificate is refused as revoked)")


def test_a_list_past_its_next_update_warns_when_loaded(pki, caplog):
    ca = CertificateAuthority.load(pki)
    due = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    overdue = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
               .last_update(due - dt.timedelta(days=7)).next_update(due)
               .add_extension(x509.CRLNumber(7), critical=False).sign(ca.key, hashes.SHA256()))
    (pki / "ca.crl").write_bytes(overdue.public_bytes(serialization.Encoding.PEM))
    Revocations((pki / "ca.pem").read_bytes(), pki / "ca.crl")
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING] \
        == [(logging.WARNING, f"revocation list {pki / 'ca.crl'} (number 7) was due for renewal "
                              "on 2026-01-02 03:04:05+00:00: it is still enforced; ask the CA "
                              "for the next one")]


def test_a_list_read_again_says_whether_it_changed_and_logs_only_a_change(pki, caplog):
    caplog.set_level(logging.DEBUG, logger="invisible.net.tls")
    ca = CertificateAuthority.load(pki)
    path = pki / "ca.crl"

    def logged() -> list[tuple[int, str]]:
        found = [(r.levelno, r.getMessage()) for r in caplog.records
                 if r.name == "invisible.net.tls"]
        caplog.clear()
        return found

    revocations = Revocations((pki / "ca.pem").read_bytes(), path)
    # at start the node's own log line and health tell it: debug only
    assert logged() == [(logging.DEBUG, f"revocation list {path} number 1 loaded: 0 "
                                        "certificate(s) revoked")]
    assert revocations.load() is False  # the same list again: nothing to tell
    assert logged() == []
    ca.revoke(pki, serial(pki / "alpha.pem"))
    assert revocations.load() is True
    assert logged() == [(logging.INFO, f"revocation list {path} number 2 loaded: 1 "
                                       "certificate(s) revoked")]
    ca.revoke(pki, serial(pki / "alpha.pem"))  # the same serials, signed anew as number 3
    assert revocations.load() is True and revocations.number == 3
    assert Revocations((pki / "ca.pem").read_bytes(), None).load() is False


def test_the_list_file_is_looked_at_once_a_second_and_read_only_when_it_changed(
        pki, monkeypatch, caplog):
    clock = [1000.0]
    monkeypatch.setattr(tls_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    looks: list[Path] = []

    def stat(path):
        looks.append(path)
        return os.stat(path)

    monkeypatch.setattr(tls_module, "os", types.SimpleNamespace(stat=stat))
    ca = CertificateAuthority.load(pki)
    revocations = Revocations((pki / "ca.pem").read_bytes(), pki / "ca.crl")
    loads = []
    load = revocations.load
    revocations.load = lambda: loads.append(1) or load()  # type: ignore[method-assign]
    alpha, beta = Context((pki / "alpha.pem").read_bytes()), Context((pki / "beta.pem").read_bytes())

    def at(when: float, context: Context) -> None:
        clock[0] = when
        revocations.check(context)

    at(1000.5, beta)  # within a second of loading: not even looked at
    assert (len(looks), len(loads)) == (0, 0)
    at(1001.0, beta)  # looked at, unchanged: not read
    assert (len(looks), len(loads)) == (1, 0)
    ca.revoke(pki, serial(pki / "alpha.pem"))
    at(1001.5, alpha)  # changed, but looked at half a second ago: taken at the next look
    assert (len(looks), len(loads)) == (1, 0)
    with pytest.raises(PolicyError):
        at(1002.0, alpha)
    assert (len(looks), len(loads)) == (2, 1)
    at(1003.0, beta)  # read once per change, not at every look after it
    assert (len(looks), len(loads)) == (3, 1)
    (pki / "ca.crl").unlink()
    with pytest.raises(PolicyError):  # gone: the list in force stays, and the log says why
        at(1004.0, alpha)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        f"revocation list unreadable: {pki / 'ca.crl'} (No such file or directory); the list "
        "loaded before stays in force"]


def test_a_node_whose_own_certificate_is_missing_or_revoked_is_told_which(pki):
    revocations = Revocations((pki / "ca.pem").read_bytes(), pki / "ca.crl")
    files = TlsFiles(pki / "ca.pem", pki / "alpha.pem", pki / "alpha.key")
    revocations.refuse_own(files)
    with pytest.raises(ConfigError, match=f"^certificate file not found: {pki / 'gone.pem'}$"):
        revocations.refuse_own(TlsFiles(pki / "ca.pem", pki / "gone.pem", pki / "alpha.key"))
    CertificateAuthority.load(pki).revoke(pki, serial(pki / "alpha.pem"))
    revocations.load()
    with pytest.raises(ConfigError, match=f"^certificate {pki / 'alpha.pem'} is revoked by the "
                                          f"CA's list {pki / 'ca.crl'}: ask the CA for a new "
                                          "one$"):
        revocations.refuse_own(files)


def test_a_node_without_a_list_refuses_no_one_and_health_reads_an_empty_list(pki):
    none = Revocations((pki / "ca.pem").read_bytes(), None)
    assert (none.number, none.serials, none.next_update) == (0, frozenset(), None)
    assert not none.stale() and not none.revoked((pki / "alpha.pem").read_bytes())
    none.check(Context((pki / "alpha.pem").read_bytes()))


def test_days_left_counts_whole_days_of_86400_seconds(pki):
    pem = (pki / "alpha.pem").read_bytes()
    end = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    assert days_left(pem, end - dt.timedelta(days=10)) == 10.0
    assert days_left(pem, end - dt.timedelta(days=2, hours=12)) == 2.5
    assert days_left(pem, end + dt.timedelta(days=1)) == -1.0


def test_pki_revoke_shows_whose_certificate_and_asks_first(pki):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "invisible", "pki", "revoke", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    refused = cli(str(pki / "alpha.pem"), "--ca", str(pki))
    assert refused.returncode != 0 and "nothing done: confirm with --yes" in refused.stderr
    assert "revoke " in refused.stdout and "alpha (party)" in refused.stdout
    assert listed(pki / "ca.crl") == {}
    done = cli(str(pki / "alpha.pem"), "--ca", str(pki), "--reason", "key-compromise", "--yes")
    assert done.returncode == 0, done.stderr
    assert listed(pki / "ca.crl") == {serial(pki / "alpha.pem"): x509.ReasonFlags.key_compromise}
    by_serial = cli("--serial", f"{serial(pki / 'beta.pem'):x}", "--ca", str(pki), "--yes")
    assert by_serial.returncode == 0, by_serial.stderr
    assert serial(pki / "beta.pem") in listed(pki / "ca.crl")
    foreign = pki / "foreign"
    init_pki(foreign, ["alpha"])
    stranger = cli(str(foreign / "alpha.pem"), "--ca", str(pki), "--yes")
    assert "was not issued by the CA in" in stranger.stderr
    assert cli("--ca", str(pki), "--yes").returncode != 0  # neither a file nor a serial


def renew(pki: Path, party: str) -> tuple[Path, Path]:
    """A second key and certificate for `party`, as an institution renewing before expiry."""
    ca = CertificateAuthority.load(pki)
    key_pem, cert_pem = ca.issue(Identity(party, Role.PARTY))
    key, cert = pki / f"{party}-renewed.key", pki / f"{party}-renewed.pem"
    key.write_bytes(key_pem)
    key.chmod(0o600)
    cert.write_bytes(cert_pem)
    return key, cert


def served_serial(port: int, pki: Path) -> int:
    """The serial of the certificate a node presents to a new connection (as bank)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "ca.pem")
    context.load_cert_chain(pki / "bank.pem", pki / "bank.key")
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


@pytest.mark.timeout(180)
def test_nodes_refuse_a_revoked_party_and_coordinator_and_accept_a_renewed_certificate(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, sample_datasets())
    pki = tmp_path / "pki"
    ca = CertificateAuthority.load(pki)
    telco = layout.party_configs["telco"]
    with InProcessNodes(layout) as nodes, \
            Federation.from_config(layout.coordinator_config) as fed:
        expected = fed.secure_sum(INPUTS, 1e5).total
        # telco renews: a second certificate while the first is still valid, taken up by a
        # reload (no restart) for its calls and every new connection; peers need nothing
        key, cert = renew(pki, "telco")
        old_serial = serial(pki / "telco.pem")
        assert served_serial(nodes.nodes["telco"].port, pki) == old_serial
        text = telco.read_text()
        telco.write_text(text.replace(str(pki / "telco.pem"), str(cert))
                         .replace(str(pki / "telco.key"), str(key)))
        nodes.nodes["telco"].reload()
        assert served_serial(nodes.nodes["telco"].port, pki) == serial(cert)
        assert fed.secure_sum(INPUTS, 1e5).total == pytest.approx(expected)
        # the old certificate is revoked: nothing changes for telco's renewed one
        ca.revoke(pki, old_serial, "superseded")
        time.sleep(1.2)
        assert fed.secure_sum(INPUTS, 1e5).total == pytest.approx(expected)
        # telco's renewed certificate revoked: bank and hospital refuse its calls
        ca.revoke(pki, serial(cert), "key-compromise")
        time.sleep(1.2)
        with pytest.raises(InvisibleError):
            fed.secure_sum(INPUTS, 1e5)
        bank = nodes.nodes["bank"]
        refusals = [e for e in bank.ledger.entries() if e.event == "revoked-refused"]
        assert [e.body for e in refusals] == [
            {"caller": "telco", "role": "party", "serial": f"{serial(cert):x}"}]
        assert bank.metrics.revoked_calls.labels("party")._value.get() >= 1
        sample = bank.metrics.registry.get_sample_value
        assert 364 < sample("invisible_certificate_days_left", {"certificate": "node"}) <= 365
        assert 364 < sample("invisible_certificate_days_left", {"certificate": "ca"}) <= 365
        config = bank.config
        report, problems = verify_ledger(config.ledger.path, "bank", load_public_key(
            config.ledger.signing_key.with_suffix(".pub")))
        assert report.ok and not problems  # the refusal is a signed entry of the chain
        # the coordinator's certificate revoked: every node refuses it, saying why
        ca.revoke(pki, serial(pki / "coordinator.pem"), "cessation-of-operation")
        time.sleep(1.2)
        with pytest.raises(PolicyError, match="coordinator .coordinator. .serial [0-9a-f]+. is "
                                              "revoked by the federation's CA"):
            fed.secure_sum({p: INPUTS[p] for p in ("bank", "hospital")}, 1e5)
    # a node whose own certificate is revoked does not start
    with pytest.raises(ConfigError, match="is revoked by the CA's list"):
        PartyNode(load_party_config(telco))


def test_a_reload_takes_only_a_certificate_of_the_same_identity_not_revoked(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES)
    pki, bank = tmp_path / "pki", layout.party_configs["bank"]
    node = PartyNode(load_party_config(bank))
    try:
        original = node.tls
        text = bank.read_text()
        bank.write_text(text.replace(str(pki / "bank.pem"), str(pki / "hospital.pem"))
                        .replace(str(pki / "bank.key"), str(pki / "hospital.key")))
        with pytest.raises(ConfigError, match="hospital.pem is issued to hospital .party.; "
                                              "this node is bank .party."):
            node.reload()
        key, cert = renew(pki, "bank")
        CertificateAuthority.load(pki).revoke(pki, serial(cert))
        bank.write_text(text.replace(str(pki / "bank.pem"), str(cert))
                        .replace(str(pki / "bank.key"), str(key)))
        with pytest.raises(ConfigError, match="bank-renewed.pem is revoked by the CA's list"):
            node.reload()
        assert node.tls is original  # nothing changed
        bank.write_text(text)
        node.reload()
        assert node.tls is original  # the same files: nothing to renew
    finally:
        node.stop(grace_s=0)
