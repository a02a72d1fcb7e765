"""Certificates for institutions on separate machines: a request made where the key lives,
signed by whoever holds the CA, and nothing but the request's identity and key certified.

Guards `invisible pki request`, `invisible pki sign` and `invisible pki init` without
identities (the CA alone); the key never leaves the requester's folder, a request that is
altered, names no identity or two, or carries another kind of key is refused naming what is
wrong, and a certificate made this way is accepted by a node's TLS like one `pki init` made.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from invisible.errors import ConfigError
from invisible.net.pki import (
    CertificateAuthority,
    Identity,
    Role,
    identity_from_pem,
    init_ca,
    make_request,
    read_request,
    write_request,
)
from invisible.net.tls import TlsFiles, TlsMaterial

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invisible", "pki", *args], cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_a_request_signed_by_the_ca_is_a_certificate_a_node_loads(tmp_path):
    ca_dir, bank_dir = tmp_path / "ca", tmp_path / "bank"
    assert cli("init", str(ca_dir)).returncode == 0
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.crl", "ca.key", "ca.pem"]  # CA, list
    made = cli("request", "--id", "bank", "--out", str(bank_dir))
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in bank_dir.iterdir()) == [
        "bank-ledger.key", "bank-ledger.pub", "bank.csr", "bank.key"]
    assert os.stat(bank_dir / "bank.key").st_mode & 0o777 == 0o600
    fingerprint = read_request((bank_dir / "bank.csr").read_bytes()).fingerprint
    assert fingerprint in made.stdout
    signed = cli("sign", str(bank_dir / "bank.csr"), "--ca", str(ca_dir), "--yes")
    assert signed.returncode == 0, signed.stderr
    assert f"bank (party), valid 365 days from now, public key SHA-256 {fingerprint}" \
        in signed.stdout
    assert not list(ca_dir.glob("bank*"))  # nothing of the institution's at the CA
    tls = TlsMaterial.load(TlsFiles(ca_dir / "ca.pem", bank_dir / "bank.pem",
                                    bank_dir / "bank.key"), expected_role=Role.PARTY)
    assert tls.identity == Identity("bank", Role.PARTY)


def test_signing_asks_first_and_refuses_without_an_answer_or_over_a_certificate(tmp_path):
    init_ca(tmp_path / "ca")
    _, csr = write_request(tmp_path, Identity("telco", Role.DEALER))
    refused = cli("sign", str(csr), "--ca", str(tmp_path / "ca"))  # stdin is not a terminal
    assert refused.returncode == 2
    assert "nothing done: confirm with --yes when not asked at a terminal" in refused.stderr
    assert not (tmp_path / "telco.pem").exists()
    assert cli("sign", str(csr), "--ca", str(tmp_path / "ca"), "--yes").returncode == 0
    assert identity_from_pem((tmp_path / "telco.pem").read_bytes()) == Identity(
        "telco", Role.DEALER)
    again = cli("sign", str(csr), "--ca", str(tmp_path / "ca"), "--yes")
    assert again.returncode == 2 and "telco.pem exists" in again.stderr


def test_a_request_never_replaces_a_key_and_a_missing_ca_is_named(tmp_path):
    write_request(tmp_path, Identity("bank", Role.PARTY))
    with pytest.raises(ConfigError, match="bank.key exists: move it away first"):
        write_request(tmp_path, Identity("bank", Role.PARTY))
    with pytest.raises(ConfigError, match="no CA to sign with in .*nowhere.*ca.pem"):
        CertificateAuthority.load(tmp_path / "nowhere")


def test_only_the_request_s_identity_and_key_are_certified():
    ca = CertificateAuthority.create()
    key = ec.generate_private_key(ec.SECP256R1())
    # a request that asks to be a CA itself: the extension is not copied
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bank")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.party.invisible")]),
                          critical=False)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(key, hashes.SHA256()))
    request = read_request(csr.public_bytes(serialization.Encoding.PEM))
    cert = x509.load_pem_x509_certificate(ca.sign_request(request, 30))
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.public_key() == key.public_key()
    assert identity_from_pem(cert.public_bytes(serialization.Encoding.PEM)) == Identity(
        "bank", Role.PARTY)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    with pytest.raises(ConfigError, match="valid for at least a day, not 0"):
        ca.sign_request(request, 0)


def request_pem(key, names: list[str]) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(("pem", "why"), [
    (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
     "bank.csr is not a PEM certificate signing request"),
    (lambda: request_pem(ec.generate_private_key(ec.SECP256R1()), []),
     "bank.csr names no identity"),
    (lambda: request_pem(ec.generate_private_key(ec.SECP256R1()),
                         ["bank.party.invisible", "telco.party.invisible"]),
     "bank.csr does not name exactly one invisible identity"),
    (lambda: request_pem(ec.generate_private_key(ec.SECP256R1()), ["invisible.party.invisible"]),
     "'invisible' is reserved"),
    (lambda: request_pem(ec.generate_private_key(ec.SECP384R1()), ["bank.party.invisible"]),
     "bank.csr carries another key than an EC P-256 key"),
    (lambda: request_pem(ed25519.Ed25519PrivateKey.generate(), ["bank.party.invisible"]),
     "bank.csr carries another key than an EC P-256 key"),
])
def test_a_request_that_is_not_what_it_should_be_is_refused_naming_why(pem, why):
    with pytest.raises(ConfigError) as refused:
        read_request(pem(), "bank.csr")
    assert why in str(refused.value)


def test_an_altered_request_is_refused_as_not_signed_by_its_key():
    _, pem = make_request(Identity("bank", Role.PARTY))
    csr = x509.load_pem_x509_csr(pem)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    at = der.find(b"bank.party")  # the identity, inside the signed part
    der[at:at + 4] = b"evil"
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ConfigError, match=(
            r"^the request is not signed by the key it carries \(altered, or its sender does "
            r"not hold that key\)$")):
        read_request(forged)


def test_requests_are_written_where_asked_with_a_ledger_key_for_nodes_only(tmp_path):
    """In process (the CLI tests run `invisible` in another process, which mutation testing
    does not reach)."""
    for role in (Role.PARTY, Role.DEALER, Role.COORDINATOR):
        folder = tmp_path / role.value / "not" / "yet" / "there"
        key, csr = write_request(folder, Identity("inst", role))
        assert (key, csr) == (folder / "inst.key", folder / "inst.csr")
        assert read_request(csr.read_bytes()).identity == Identity("inst", role)
        ledger = {p.name for p in folder.glob("inst-ledger.*")}
        assert ledger == ({"inst-ledger.key", "inst-ledger.pub"}
                          if role is not Role.COORDINATOR else set())
    with pytest.raises(ConfigError, match=(
            r"party/not/yet/there/inst.key exists: move it away first \(a request never "
            r"replaces a key\)$")):
        write_request(tmp_path / "party" / "not" / "yet" / "there", Identity("inst", Role.PARTY))


def test_init_ca_refuses_to_replace_a_ca_unless_told(tmp_path):
    first = init_ca(tmp_path).certificate
    with pytest.raises(ConfigError, match=f"^{tmp_path} already holds a CA; pass --force to "
                                          "replace it$"):
        init_ca(tmp_path)
    assert CertificateAuthority.load(tmp_path).certificate == first
    assert init_ca(tmp_path, overwrite=True).certificate != first


def test_a_certificate_may_be_valid_for_one_day_and_not_less():
    ca = CertificateAuthority.create()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = x509.load_pem_x509_certificate(ca.certify(Identity("bank", Role.PARTY),
                                                     key.public_key(), validity_days=1))
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == \
        pytest.approx(86400 + 300)  # a day from now, from five minutes ago
    with pytest.raises(ConfigError, match="^a certificate must be valid for at least a day, "
                                          "not 0$"):
        ca.certify(Identity("bank", Role.PARTY), key.public_key(), validity_days=0)


def test_node_check_loads_everything_a_node_would_and_names_what_would_stop_it(tmp_path):
    from invisible.coordinator.local import write_local_federation
    from invisible.operator import check_node
    from invisible.samples import SAMPLE_COLUMNS, sample_datasets

    layout = write_local_federation(tmp_path, tuple(SAMPLE_COLUMNS), sample_datasets(),
                                    dealers=["dealer"])
    done = subprocess.run([sys.executable, "-m", "invisible", "node", "check", "--config",
                           str(layout.party_configs["bank"])], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "bank (party), listening on 127.0.0.1:0" in done.stdout
    assert re.search(r"certificate .*bank\.pem: 36[45] days left\n", done.stdout)
    assert "dataset customers: 240 rows; customer_id int" in done.stdout
    assert re.search(r"revocation list .*ca\.crl: number 1, 0 certificate\(s\) revoked; next "
                     r"update due \d{4}-\d\d-\d\d\n", done.stdout)
    assert done.stdout.rstrip().endswith("ok: the node would start with this config")
    assert any("dealer" in line for line in check_node(layout.dealer_configs["dealer"],
                                                        Role.DEALER))
    with pytest.raises(ConfigError, match="bank.pem is a party certificate; this needs a dealer"):
        check_node(layout.party_configs["bank"], Role.DEALER)
    (tmp_path / "pki" / "bank-ledger.key").unlink()
    with pytest.raises(ConfigError, match="the ledger signing key .*bank-ledger.key is missing"):
        check_node(layout.party_configs["bank"], Role.PARTY)


def test_init_names_what_it_refuses_and_never_replaces_a_ledger_key(tmp_path):
    from invisible.net.pki import init_pki

    with pytest.raises(ConfigError, match="^name at least one party$"):
        init_pki(tmp_path / "a", [])
    with pytest.raises(ConfigError, match=r"^every identity needs its own id \(a party, "
                                          r"coordinator, dealer or approver twice\)$"):
        init_pki(tmp_path / "b", ["bank"], ["bank"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bank-ledger.pub").write_text("kept")
    with pytest.raises(ConfigError, match=r"bank-ledger.pub exists without its private key "
                                          r"bank-ledger.key; restore that key \(a PKI command "
                                          r"never replaces a ledger key\)$"):
        init_pki(tmp_path / "c", ["bank"])
