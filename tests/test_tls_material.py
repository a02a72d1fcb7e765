"""TLS material a node refuses to start with, and the caller identity a servicer reads.

Every refusal names which file was wrong and how (missing, empty, not PEM, a
key of an unsupported kind, a certificate of another CA), and an RPC's
caller is taken only from its verified certificate: none, or one naming no
single identity, is refused saying so; a role that may not call is named.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from invisible.errors import ConfigError, PolicyError
from invisible.net.pki import CertificateAuthority, Identity, Role
from invisible.net.tls import TlsFiles, TlsMaterial, caller_identity, require_role


@pytest.fixture
def pki(tmp_path):
    ca = CertificateAuthority.create()
    ca.save(tmp_path)
    ca.issue_to(tmp_path, Identity("alpha", Role.PARTY))
    return tmp_path


def files_of(pki, **replaced):
    files = {"ca": pki / "ca.pem", "cert": pki / "alpha.pem", "key": pki / "alpha.key"}
    return TlsFiles(**{**files, **replaced})


WHAT = {"ca": "CA certificate", "cert": "certificate", "key": "private key"}


def fingerprint(data: bytes) -> str:
    """Compared instead of the bytes, so that a failure never prints a key."""
    return hashlib.sha256(data).hexdigest()


def test_material_that_belongs_together_loads_with_the_identity_it_proves(pki):
    for expected_role in (Role.PARTY, None):
        tls = TlsMaterial.load(files_of(pki), expected_role=expected_role)
        assert tls.identity == Identity("alpha", Role.PARTY)
        assert [fingerprint(pem) for pem in (tls.ca_pem, tls.cert_pem, tls.key_pem)] == [
            fingerprint((pki / name).read_bytes()) for name in ("ca.pem", "alpha.pem", "alpha.key")]


def test_a_certificate_in_another_role_than_needed_is_refused_naming_both_roles(pki):
    with pytest.raises(ConfigError, match=re.escape(f"certificate {pki / 'alpha.pem'} is a party "
                                                    "certificate; this needs a coordinator certificate")):
        TlsMaterial.load(files_of(pki), expected_role=Role.COORDINATOR)


@pytest.mark.parametrize("which", WHAT)
def test_a_missing_or_empty_file_is_named_with_what_it_should_hold(pki, which):
    with pytest.raises(ConfigError, match=f"^{WHAT[which]} file not found: .*nowhere.pem$"):
        TlsMaterial.load(files_of(pki, **{which: pki / "nowhere.pem"}))
    (pki / "empty.pem").write_text(" \n")
    with pytest.raises(ConfigError, match=f"^{WHAT[which]} file is empty: .*empty.pem$"):
        TlsMaterial.load(files_of(pki, **{which: pki / "empty.pem"}))


@pytest.mark.parametrize("which", ["ca", "cert"])
def test_a_certificate_file_that_is_not_pem_is_named(pki, which):
    (pki / "garbage.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="^not a PEM certificate: .*garbage.pem$"):
        TlsMaterial.load(files_of(pki, **{which: pki / "garbage.pem"}))


def test_a_key_of_an_unsupported_kind_is_named(pki):
    (pki / "alpha.key").write_bytes(x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(ConfigError, match="^unsupported private key type in .*alpha.key$"):
        TlsMaterial.load(files_of(pki))


def test_a_certificate_of_another_ca_is_refused_naming_both_files(pki, tmp_path_factory):
    foreign = tmp_path_factory.mktemp("foreign")
    CertificateAuthority.create().issue_to(foreign, Identity("alpha", Role.PARTY))
    files = files_of(pki, cert=foreign / "alpha.pem", key=foreign / "alpha.key")
    with pytest.raises(ConfigError, match=re.escape(
            f"certificate {foreign / 'alpha.pem'} was not issued by CA {pki / 'ca.pem'}")):
        TlsMaterial.load(files)


class Context:
    """The part of a gRPC servicer context that names the caller."""

    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_the_caller_is_the_identity_of_its_verified_certificate(pki):
    context = Context({"x509_pem_cert": [(pki / "alpha.pem").read_bytes()]})
    assert caller_identity(context) == Identity("alpha", Role.PARTY)
    assert require_role(context, Role.DEALER, Role.PARTY) == Identity("alpha", Role.PARTY)


def test_a_caller_without_a_certificate_is_refused_saying_so():
    for auth in ({}, {"x509_pem_cert": []}):
        with pytest.raises(PolicyError, match="^the caller presented no client certificate$"):
            caller_identity(Context(auth))


def test_a_caller_whose_certificate_names_no_identity_is_refused_saying_why(pki):
    ca_pem = (pki / "ca.pem").read_bytes()  # a certificate without a subject alternative name
    with pytest.raises(PolicyError, match="^the caller's certificate is not usable: "
                                          "certificate has no subject alternative name$"):
        caller_identity(Context({"x509_pem_cert": [ca_pem]}))


def test_a_caller_in_a_role_that_may_not_call_is_refused_naming_the_roles_needed(pki):
    context = Context({"x509_pem_cert": [(pki / "alpha.pem").read_bytes()]})
    with pytest.raises(PolicyError, match=re.escape(
            "alpha (party) may not call this; it needs a coordinator or dealer certificate")):
        require_role(context, Role.COORDINATOR, Role.DEALER)
