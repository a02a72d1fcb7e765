"""A certificate authority kept on disk: what it loads back, and the key files it refuses.

A CA loaded from a folder must issue certificates its own certificate vouches
for; a key of the wrong kind, or one that is not the key of ``ca.pem``, is
refused when the CA is loaded, naming the file, not later at a handshake.
"""

from __future__ import annotations

import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from invisible.errors import ConfigError
from invisible.net.pki import CertificateAuthority, Identity, Role, identity_from_pem


@pytest.fixture
def ca_dir(tmp_path):
    CertificateAuthority.create().save(tmp_path)
    return tmp_path


def test_a_saved_ca_loads_back_and_issues_certificates_its_certificate_vouches_for(ca_dir):
    ca = CertificateAuthority.load(ca_dir)
    _, cert_pem = ca.issue(Identity("alpha", Role.PARTY))
    x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(
        x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes()))
    assert identity_from_pem(cert_pem) == Identity("alpha", Role.PARTY)


def test_a_ca_key_that_is_not_an_ec_key_is_refused_naming_the_file(ca_dir):
    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    (ca_dir / "ca.key").write_bytes(other)
    with pytest.raises(ConfigError,
                       match=re.escape(f"{ca_dir / 'ca.key'} is not an EC private key")):
        CertificateAuthority.load(ca_dir)


def test_a_ca_key_that_does_not_match_its_certificate_is_refused(ca_dir, tmp_path_factory):
    """It would issue certificates that every node then refuses as not issued by the CA."""
    elsewhere = tmp_path_factory.mktemp("other-ca")
    CertificateAuthority.create().save(elsewhere)
    (ca_dir / "ca.key").write_bytes((elsewhere / "ca.key").read_bytes())
    with pytest.raises(ConfigError, match=re.escape(
            f"{ca_dir / 'ca.key'} is not the key of {ca_dir / 'ca.pem'}")):
        CertificateAuthority.load(ca_dir)


@pytest.mark.parametrize("broken", ["ca.pem", "ca.key"])
def test_a_ca_file_that_is_not_pem_is_refused_saying_what_each_must_be(ca_dir, broken):
    (ca_dir / broken).write_bytes(b"not PEM at all")
    with pytest.raises(ConfigError, match="^" + re.escape(
            f"{ca_dir} holds no usable CA: ca.pem must be a PEM certificate and ca.key its "
            "unencrypted PEM key") + "$"):
        CertificateAuthority.load(ca_dir)
