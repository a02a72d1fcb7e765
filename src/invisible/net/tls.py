"""Mutual-TLS material for gRPC: load and check files, build credentials, read the caller.

A node's server requires a client certificate from the federation's CA; a
client pins the name it expects (see :func:`invisible.net.pki.target_name`).
Identity on the server side always comes from the verified certificate in
the connection's auth context, never from a message field, and a certificate the
CA has revoked is refused on every call (:class:`Revocations`).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from invisible.errors import ConfigError, PolicyError
from invisible.net.pki import (
    Identity,
    Role,
    identity_from_certificate,
    identity_from_pem,
    load_revocation_list,
)

log = logging.getLogger(__name__)


def days_left(cert_pem: bytes, now: dt.datetime | None = None) -> float:
    """Days until the certificate expires (negative once it has)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return (cert.not_valid_after_utc - (now or dt.datetime.now(dt.UTC))).total_seconds() / 86400


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
    #: The CA's certificate revocation list (optional: without it nothing is revoked).
    crl: Path | None = None


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

    def certificate_configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


def renewable_server_credentials(current: Callable[[], TlsMaterial]) -> grpc.ServerCredentials:
    """Server credentials that present the certificate `current()` returns at each new
    connection: a node renewed with a new certificate (while the old one is still valid)
    serves it without a restart; connections already open keep the old one."""
    served = [current()]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        now = current()
        if now is served[0]:
            return None  # unchanged
        served[0] = now
        return now.certificate_configuration()

    return grpc.dynamic_ssl_server_credentials(
        served[0].certificate_configuration(), fetch, require_client_authentication=True)


@functools.lru_cache(maxsize=256)
def _identity_of(pem: bytes) -> Identity:
    return identity_from_pem(pem)


@functools.lru_cache(maxsize=256)
def _serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


#: Called with the identity and serial of a refused revoked certificate, and whether this
#: is its first refusal since the list was loaded.
OnRevoked = Callable[[Identity, int, bool], None]


class Revocations:
    """The CA's revocation list as a node enforces it: a call made with a certificate the
    list names is refused (PolicyError) before the call's method runs, on every call, not
    only at the handshake (a connection opened before the revocation is refused too).

    The list must be signed by the federation's CA and carry a CRL number; one that is not
    stops the node at start. It is read again when its file changes (looked at no more
    than once a second) and on a reload; a new file that does not load leaves the list in
    force as it was, and an error says why. A list whose next update has passed is still
    enforced, with a warning.

    Only the server side can check: gRPC's Python API does not show a client the
    certificate its server presented. A revoked node is refused on its first call, so it
    takes part in no exchange; what peers sent it first (a protocol's first message) is all
    it can receive.
    """

    RECHECK_S = 1.0

    def __init__(self, ca_pem: bytes, path: Path | None,
                 on_revoked: OnRevoked | None = None) -> None:
        self._ca = x509.load_pem_x509_certificate(ca_pem)
        self.path = path
        self.on_revoked = on_revoked
        self.serials: frozenset[int] = frozenset()
        self.number = 0
        self.next_update: dt.datetime | None = None
        self._stamp: tuple[int, int] | None = None
        self._looked_at = 0.0
        self._told: set[int] = set()
        self._lock = threading.Lock()
        if path is not None:
            self.load()

    def load(self) -> bool:
        """Read the list (ConfigError if it does not load; nothing changes then); True if
        it differs from the one in force."""
        if self.path is None:
            return False
        try:
            status = self.path.stat()
            data = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"revocation list unreadable: {self.path} ({exc.strerror})") \
                from None
        crl = load_revocation_list(data, self._ca, str(self.path))
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        serials = frozenset(entry.serial_number for entry in crl)
        with self._lock:
            first = self._stamp is None
            changed = serials != self.serials or number != self.number
            self.serials, self.number, self.next_update = serials, number, crl.next_update_utc
            self._stamp = (status.st_mtime_ns, status.st_size)
            self._looked_at = time.monotonic()
            if changed:
                self._told.clear()
        if self.stale():
            log.warning("revocation list %s (number %d) was due for renewal on %s: it is "
                        "still enforced; ask the CA for the next one", self.path, number,
                        self.next_update)
        if changed:  # at start, `invisible node check` and health tell it
            log.log(logging.DEBUG if first else logging.INFO,
                    "revocation list %s number %d loaded: %d certificate(s) revoked",
                    self.path, number, len(serials))
        return changed

    def stale(self, now: dt.datetime | None = None) -> bool:
        return self.next_update is not None and self.next_update < (now or dt.datetime.now(dt.UTC))

    def _refresh(self) -> None:
        """Load the file again if it changed since it was read (at most once a second)."""
        now = time.monotonic()
        if self.path is None or now - self._looked_at < self.RECHECK_S:
            return
        self._looked_at = now
        try:
            status = os.stat(self.path)
        except OSError:
            status = None
        if status is None or (status.st_mtime_ns, status.st_size) != self._stamp:
            try:
                self.load()
            except ConfigError as exc:
                log.error("%s; the list loaded before stays in force", exc)

    def revoked(self, cert_pem: bytes) -> bool:
        return _serial_of(cert_pem) in self.serials

    def revoked_now(self, cert_pem: bytes) -> bool:
        """Whether `cert_pem` is on the list as it is now (the file read again if it
        changed): for a certificate whose earlier act still counts, such as an approval."""
        self._refresh()
        return self.revoked(cert_pem)

    def refuse_own(self, files: TlsFiles) -> None:
        """ConfigError if the node's own certificate is on the list (it would be refused by
        every peer that reads it)."""
        if self.revoked(_read(files.cert, "certificate")):
            raise ConfigError(f"certificate {files.cert} is revoked by the CA's list "
                              f"{self.path}: ask the CA for a new one")

    def describe(self) -> str:
        if self.path is None:
            return "revocation list: none (no [tls] crl: no certificate is refused as revoked)"
        text = (f"revocation list {self.path}: number {self.number}, {len(self.serials)} "
                "certificate(s) revoked")
        if self.next_update is not None:
            text += f"; next update due {self.next_update:%Y-%m-%d}"
        if self.stale():
            text += " (overdue: ask the CA for the next)"
        return text

    def check(self, context: grpc.ServicerContext) -> None:
        """Refuse the call if its client certificate is revoked (PolicyError)."""
        if self.path is None:
            return
        self._refresh()
        certs = context.auth_context().get("x509_pem_cert")
        if not certs or not self.revoked(certs[0]):
            return
        identity = caller_identity(context)
        serial = _serial_of(certs[0])
        with self._lock:
            first = serial not in self._told
            self._told.add(serial)
        if self.on_revoked is not None:
            self.on_revoked(identity, serial, first)
        raise PolicyError(f"the certificate of {identity} (serial {serial:x}) is revoked by "
                          "the federation's CA")


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
        article = "an" if allowed[0] in "aeiou" else "a"
        raise PolicyError(f"{identity} may not call this; it needs {article} {allowed} "
                          "certificate")
    return identity
