"""Mutual-TLS material for gRPC: load and check files, build credentials, read the caller.

A node's server requires a client certificate from the federation's CA; a
client pins the name it expects (see :func:`invisible.net.pki.target_name`).
Identity on the server side always comes from the verified certificate in
the connection's auth context, never from a message field.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from invisible.errors import ConfigError, PolicyError
from invisible.net.pki import Identity, Role, identity_from_certificate, identity_from_pem


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{what} file unreadable: {path} ({exc.strerror})") from None
    if not data.strip():
        raise ConfigError(f"{what} file is empty: {path}")
    return data


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsMaterial:
    """A checked CA certificate, own certificate and own key, and the identity they prove."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    identity: Identity

    def __repr__(self) -> str:  # never show the key
        return f"TlsMaterial(identity={self.identity})"

    @classmethod
    def load(cls, files: TlsFiles, expected_role: Role | None = None) -> TlsMaterial:
        ca_pem = _read(files.ca, "CA certificate")
        cert_pem = _read(files.cert, "certificate")
        key_pem = _read(files.key, "private key")
        try:
            ca = x509.load_pem_x509_certificate(ca_pem)
        except ValueError:
            raise ConfigError(f"not a PEM certificate: {files.ca}") from None
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise ConfigError(f"not a PEM certificate: {files.cert}") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"not an unencrypted PEM private key: {files.key}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
                          | ed25519.Ed25519PrivateKey):
            raise ConfigError(f"unsupported private key type in {files.key}")
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise ConfigError(f"private key {files.key} does not belong to certificate {files.cert}")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no base here
            raise ConfigError(f"certificate {files.cert} was not issued by CA {files.ca}") from exc
        identity = identity_from_certificate(cert)
        if expected_role is not None and identity.role != expected_role:
            raise ConfigError(
                f"certificate {files.cert} is a {identity.role.value} certificate; "
                f"this needs a {expected_role.value} certificate"
            )
        return cls(ca_pem, cert_pem, key_pem, identity)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


@functools.lru_cache(maxsize=256)
def _identity_of(pem: bytes) -> Identity:
    return identity_from_pem(pem)


def caller_identity(context: grpc.ServicerContext) -> Identity:
    """The verified identity of the client of an RPC."""
    certs = context.auth_context().get("x509_pem_cert")
    if not certs:
        raise PolicyError("the caller presented no client certificate")
    try:
        return _identity_of(certs[0])
    except ConfigError as exc:
        raise PolicyError(f"the caller's certificate is not usable: {exc}") from None


def require_role(context: grpc.ServicerContext, *roles: Role) -> Identity:
    identity = caller_identity(context)
    if identity.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise PolicyError(f"{identity} may not call this; it needs a {allowed} certificate")
    return identity
