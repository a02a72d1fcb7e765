"""The development PKI: which ids are allowed, what a certificate says, and who it names.

A certificate names its holder's id and role in the role-qualified DNS name a
client pins; a certificate naming no such identity, or two, is refused. The
CA's certificate may only sign certificates; an issued one may not, and is
for both ends of a TLS connection. Private keys are written readable by their
owner only.
"""

from __future__ import annotations

import datetime as dt
import re
import stat
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from invisible.errors import ConfigError
from invisible.net.pki import (
    CertificateAuthority,
    Identity,
    Role,
    check_party_id,
    identity_from_certificate,
    identity_from_pem,
)

FIVE_MINUTES = dt.timedelta(minutes=5)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def names_of(name: x509.Name) -> dict[str, str]:
    return {attribute.oid._name: str(attribute.value) for attribute in name}


@pytest.mark.parametrize("party_id", ["a", "bank", "bank-2", "0", "x" * 63])
def test_a_dns_label_is_a_party_id(party_id):
    assert check_party_id(party_id) == party_id


@pytest.mark.parametrize("party_id", ["", "Bank", "-bank", "bank-", "ba_nk", "b.ank", "x" * 64, 7])
def test_anything_else_is_refused_naming_the_id_and_the_rule(party_id):
    with pytest.raises(ConfigError, match=re.escape(
            f"invalid party id {party_id!r}: use 1-63 lowercase letters, digits or hyphens")):
        check_party_id(party_id)


def test_the_suffix_of_every_pinned_name_cannot_be_a_party_id(ca):
    with pytest.raises(ConfigError, match="^'invisible' is reserved and cannot be a party id$"):
        check_party_id("invisible")
    with pytest.raises(ConfigError, match="'invisible' is reserved"):
        ca.issue(Identity("invisible", Role.PARTY))


@pytest.fixture
def far_east(monkeypatch):
    """The machine's clock in UTC+12: a certificate must still be valid from now."""
    monkeypatch.setenv("TZ", "UTC-12")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_default_ca_says_it_is_for_development():
    assert names_of(CertificateAuthority.create().certificate.subject)["commonName"] == (
        "invisible development CA")


def test_the_ca_certificate_may_sign_certificates_and_nothing_else(far_east):
    ca = CertificateAuthority.create("test CA", validity_days=10)
    cert = ca.certificate
    cert.verify_directly_issued_by(cert)  # self-signed, by its own key
    assert cert.subject == cert.issuer
    assert names_of(cert.subject) == {"organizationName": "invisible federation",
                                      "organizationalUnitName": "ca", "commonName": "test CA"}
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value == x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False)
    subject_key = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert not subject_key.critical  # RFC 5280: it must not be
    assert subject_key.value == x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=10) + FIVE_MINUTES
    assert cert.not_valid_before_utc <= dt.datetime.now(dt.UTC) <= cert.not_valid_after_utc


@pytest.mark.parametrize("role", list(Role))
def test_an_issued_certificate_names_its_holder_in_its_role_and_may_not_sign(ca, role, far_east):
    _, pem = ca.issue(Identity("bank", role), validity_days=30)
    cert = x509.load_pem_x509_certificate(pem)
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.issuer == ca.certificate.subject
    assert identity_from_pem(pem) == Identity("bank", role)
    assert names_of(cert.subject) == {"organizationName": "invisible federation",
                                      "organizationalUnitName": role.value, "commonName": "bank"}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["bank", f"bank.{role.value}.invisible"]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    for optional in (x509.SubjectAlternativeName, x509.ExtendedKeyUsage,
                     x509.AuthorityKeyIdentifier):  # RFC 5280: the last one must not be critical
        assert not cert.extensions.get_extension_for_class(optional).critical
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    authority = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert authority.key_identifier == x509.SubjectKeyIdentifier.from_public_key(
        ca.key.public_key()).digest
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30) + FIVE_MINUTES
    assert cert.not_valid_before_utc <= dt.datetime.now(dt.UTC) <= cert.not_valid_after_utc


def signed_with_names(ca: CertificateAuthority, *names: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone")]))
               .issuer_name(ca.certificate.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def test_one_identity_among_other_names_is_the_holder(ca):
    cert = signed_with_names(ca, "bank", "bank.party.example", "bank.party.invisible")
    assert identity_from_certificate(cert) == Identity("bank", Role.PARTY)


@pytest.mark.parametrize("names", [
    ("bank.party.invisible", "bank.coordinator.invisible"),  # two roles: which one?
    ("bank.party.invisible", "telco.party.invisible"),
    ("bank", "bank.party.example", "x.bank.party.invisible", "bank.king.invisible",
     "party.invisible"),  # names, but none of an identity
])
def test_a_certificate_naming_no_single_identity_is_refused(ca, names):
    with pytest.raises(ConfigError, match="^certificate does not name exactly one invisible identity$"):
        identity_from_certificate(signed_with_names(ca, *names))


def test_a_certificate_without_alternative_names_is_refused(ca):
    with pytest.raises(ConfigError, match="^certificate has no subject alternative name$"):
        identity_from_certificate(signed_with_names(ca))


def test_private_keys_are_written_readable_by_their_owner_only(ca, tmp_path):
    ca.save(tmp_path / "pki" / "ca")  # folders are made as needed
    key_path, cert_path = ca.issue_to(tmp_path / "nodes" / "bank", Identity("bank", Role.PARTY))
    assert (key_path.name, cert_path.name) == ("bank.key", "bank.pem")
    assert identity_from_pem(cert_path.read_bytes()) == Identity("bank", Role.PARTY)
    for key in (tmp_path / "pki" / "ca" / "ca.key", key_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key_path.chmod(0o644)  # a new key written over a key file is made private again
    ca.issue_to(tmp_path / "nodes" / "bank", Identity("bank", Role.PARTY))
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    loaded = CertificateAuthority.load(tmp_path / "pki" / "ca")
    assert loaded.certificate == ca.certificate
