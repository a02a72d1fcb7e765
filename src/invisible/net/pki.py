"""A development PKI: one CA, and per identity an ECDSA key and an X.509 certificate.

An identity is a (party id, role) pair. Its certificate carries two DNS
subject alternative names: the id itself, and ``<id>.<role>.invisible``. A
client dials a node with the TLS target name pinned to
``<id>.party.invisible``, so a certificate issued to another id, or to the
same id in another role (a coordinator certificate posing as a party), fails
the handshake. Servers read the caller's identity from the verified client
certificate with :func:`identity_from_pem`.

Revocation: the CA keeps ``ca.crl``, a certificate revocation list it signs
(:meth:`CertificateAuthority.revoke`, `invisible pki revoke`); nodes load it
(``[tls] crl``) and refuse every call made with a certificate it lists (see
invisible.net.tls.Revocations).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from invisible.errors import ConfigError
from invisible.metering.signing import ensure_signing_key

_ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SUFFIX = "invisible"
DEFAULT_VALIDITY_DAYS = 365
#: How long a revocation list says it holds before the CA issues the next (nodes keep
#: enforcing a list past it, and warn): as long as a certificate, since every revocation
#: signs the list anew.
CRL_VALIDITY_DAYS = DEFAULT_VALIDITY_DAYS
#: Why a certificate is revoked, in the words of `pki revoke --reason` (RFC 5280).
REVOCATION_REASONS = {
    "key-compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "unspecified": x509.ReasonFlags.unspecified,
}


class Role(StrEnum):
    PARTY = "party"
    DEALER = "dealer"
    COORDINATOR = "coordinator"
    #: Decides on jobs a data owner's policy holds for approval (see
    #: invisible.metering.approvals); calls nothing else.
    APPROVER = "approver"


def check_party_id(party_id: str) -> str:
    """A party id is a DNS label: lowercase letters, digits and inner hyphens."""
    if not isinstance(party_id, str) or not _ID_PATTERN.match(party_id):
        raise ConfigError(
            f"invalid party id {party_id!r}: use 1-63 lowercase letters, digits or hyphens"
        )
    if party_id == _SUFFIX:
        raise ConfigError(f"'{_SUFFIX}' is reserved and cannot be a party id")
    return party_id


def target_name(party_id: str, role: Role = Role.PARTY) -> str:
    """The DNS name a client pins when it dials this identity."""
    return f"{party_id}.{role.value}.{_SUFFIX}"


@dataclass(frozen=True)
class Identity:
    party_id: str
    role: Role

    def __str__(self) -> str:
        return f"{self.party_id} ({self.role.value})"


def identity_from_certificate(cert: x509.Certificate) -> Identity:
    """The identity a certificate was issued to, from its role-qualified DNS name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ConfigError("certificate has no subject alternative name") from None
    return _one_identity(san, "certificate")


def _one_identity(san: x509.SubjectAlternativeName, what: str) -> Identity:
    found: set[Identity] = set()
    for name in san.get_values_for_type(x509.DNSName):
        parts = name.split(".")
        if len(parts) == 3 and parts[2] == _SUFFIX and parts[1] in Role._value2member_map_:
            found.add(Identity(parts[0], Role(parts[1])))
    if len(found) != 1:
        raise ConfigError(f"{what} does not name exactly one invisible identity")
    return found.pop()


def identity_from_pem(pem: bytes) -> Identity:
    return identity_from_certificate(x509.load_pem_x509_certificate(pem))


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "invisible federation"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)  # a file that existed would keep its mode, however open
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str = "invisible development CA",
               validity_days: int = DEFAULT_VALIDITY_DAYS) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = _name(name, "ca")
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        try:
            cert_pem, key_pem = (directory / "ca.pem").read_bytes(), (directory / "ca.key").read_bytes()
        except OSError as exc:
            raise ConfigError(f"no CA to sign with in {directory}: cannot read {exc.filename} "
                              f"({exc.strerror})") from None
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, None)
        except (ValueError, TypeError):
            raise ConfigError(f"{directory} holds no usable CA: ca.pem must be a PEM "
                              "certificate and ca.key its unencrypted PEM key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{directory / 'ca.key'} is not an EC private key")
        if key.public_key() != cert.public_key():  # it would issue what its certificate disowns
            raise ConfigError(f"{directory / 'ca.key'} is not the key of {directory / 'ca.pem'}")
        return cls(cert, key)

    def save(self, directory: Path) -> None:
        """Write ``ca.pem``, ``ca.key`` (mode 0600) and an empty revocation list ``ca.crl``
        (a new CA has revoked nothing; its list is what nodes load)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.pem").write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        _write_private(directory / "ca.key", _key_pem(self.key))
        (directory / "ca.crl").write_bytes(
            self.revocation_list({}, 1).public_bytes(serialization.Encoding.PEM))

    def issue(self, identity: Identity,
              validity_days: int = DEFAULT_VALIDITY_DAYS) -> tuple[bytes, bytes]:
        """A new key and certificate for an identity, as (key PEM, certificate PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        return _key_pem(key), self.certify(identity, key.public_key(), validity_days)

    def sign_request(self, request: SigningRequest,
                     validity_days: int = DEFAULT_VALIDITY_DAYS) -> bytes:
        """The certificate (PEM) for a checked request: its identity and public key, and
        nothing else from it (this CA's own extensions, never the requested ones)."""
        return self.certify(request.identity, request.public_key, validity_days)

    def certify(self, identity: Identity, public_key: ec.EllipticCurvePublicKey,
                validity_days: int = DEFAULT_VALIDITY_DAYS) -> bytes:
        """A certificate (PEM) binding `public_key` to `identity`."""
        check_party_id(identity.party_id)
        if validity_days < 1:
            raise ConfigError(f"a certificate must be valid for at least a day, not "
                              f"{validity_days}")
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(identity.party_id, identity.role.value))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName(identity.party_id),
                        x509.DNSName(target_name(identity.party_id, identity.role)),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def revocation_list(self, revoked: dict[int, tuple[dt.datetime, x509.ReasonFlags]],
                        number: int) -> x509.CertificateRevocationList:
        """A list signed by this CA naming the serials `revoked` (serial -> (when, why))."""
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(self.certificate.subject)
                   .last_update(now - dt.timedelta(minutes=5))
                   .next_update(now + dt.timedelta(days=CRL_VALIDITY_DAYS))
                   .add_extension(x509.CRLNumber(number), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False))
        for serial, (when, reason) in sorted(revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
                .add_extension(x509.CRLReason(reason), critical=False).build())
        return builder.sign(self.key, hashes.SHA256())

    def revoke(self, directory: Path, serial: int, reason: str = "unspecified") -> Path:
        """Add `serial` to the CA's list ``ca.crl`` in `directory` (made if missing; one
        this CA did not sign is refused) and sign it anew; returns its path. Revoking a
        serial twice keeps its first date and reason."""
        if reason not in REVOCATION_REASONS:
            raise ConfigError(f"unknown revocation reason '{reason}' (one of "
                              f"{', '.join(REVOCATION_REASONS)})")
        path = directory / "ca.crl"
        revoked: dict[int, tuple[dt.datetime, x509.ReasonFlags]] = {}
        number = 1
        if path.exists():
            current = load_revocation_list(path.read_bytes(), self.certificate, str(path))
            for entry in current:
                try:
                    why = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
                except x509.ExtensionNotFound:
                    why = x509.ReasonFlags.unspecified
                revoked[entry.serial_number] = (entry.revocation_date_utc, why)
            number = current.extensions.get_extension_for_class(x509.CRLNumber).value \
                .crl_number + 1
        revoked.setdefault(serial, (dt.datetime.now(dt.UTC), REVOCATION_REASONS[reason]))
        crl = self.revocation_list(revoked, number)
        temporary = path.with_suffix(".crl.tmp")
        temporary.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        os.replace(temporary, path)  # a node reading it meanwhile sees the old or the new
        return path

    def issue_to(self, directory: Path, identity: Identity) -> tuple[Path, Path]:
        """Issue and write ``<id>.key`` (mode 0600) and ``<id>.pem``; returns their paths."""
        key_pem, cert_pem = self.issue(identity)
        directory.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = directory / f"{identity.party_id}.key", directory / f"{identity.party_id}.pem"
        _write_private(key_path, key_pem)
        cert_path.write_bytes(cert_pem)
        return key_path, cert_path


@dataclass(frozen=True)
class SigningRequest:
    """A certificate signing request, checked: signed by the key it carries (so its sender
    holds that key), a P-256 key, and exactly one identity named as a certificate would."""

    identity: Identity
    public_key: ec.EllipticCurvePublicKey

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the public key (DER), for the requester and the CA to compare."""
        der = self.public_key.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        return digest.finalize().hex(":")


def make_request(identity: Identity) -> tuple[bytes, bytes]:
    """A new key and a signing request for `identity`, as (key PEM, request PEM): the key
    stays with its institution, the request goes to whoever holds the federation's CA."""
    check_party_id(identity.party_id)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(identity.party_id, identity.role.value))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(identity.party_id),
            x509.DNSName(target_name(identity.party_id, identity.role))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def read_request(pem: bytes, source: str = "the request") -> SigningRequest:
    """A signing request, checked (see :class:`SigningRequest`); a ConfigError names what
    is wrong with it."""
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise ConfigError(f"{source} is not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise ConfigError(f"{source} is not signed by the key it carries (altered, or its "
                          "sender does not hold that key)")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"{source} carries another key than an EC P-256 key")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ConfigError(f"{source} names no identity (no subject alternative name)") from None
    identity = _one_identity(san, source)
    check_party_id(identity.party_id)
    return SigningRequest(identity, key)


def write_request(directory: Path, identity: Identity) -> tuple[Path, Path]:
    """Write ``<id>.key`` (mode 0600) and ``<id>.csr`` for `identity`, and for a node a ledger
    key pair unless it has one; refuses to replace an existing TLS key."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path, csr_path = directory / f"{identity.party_id}.key", directory / f"{identity.party_id}.csr"
    if key_path.exists():
        raise ConfigError(f"{key_path} exists: move it away first (a request never replaces a "
                          "key)")
    key_pem, csr_pem = make_request(identity)
    if identity.role in (Role.PARTY, Role.DEALER):
        ensure_signing_key(directory / f"{identity.party_id}-ledger.key",
                           directory / f"{identity.party_id}-ledger.pub")
    _write_private(key_path, key_pem)
    csr_path.write_bytes(csr_pem)
    return key_path, csr_path


def init_ca(directory: Path, *, overwrite: bool = False) -> CertificateAuthority:
    """Only the federation's CA (``ca.pem``, ``ca.key`` mode 0600): each institution then
    makes its own key and request (:func:`write_request`), and the CA signs the request."""
    if (directory / "ca.key").exists() and not overwrite:
        raise ConfigError(f"{directory} already holds a CA; pass --force to replace it")
    ca = CertificateAuthority.create()
    ca.save(directory)
    return ca


@dataclass(frozen=True)
class PkiInit:
    """What :func:`init_pki` issued, and which nodes' existing ledger keys it kept."""

    identities: list[Identity]
    kept_ledger_keys: tuple[str, ...]


def init_pki(
    directory: Path,
    parties: list[str],
    coordinators: list[str] | None = None,
    dealers: list[str] | None = None,
    *,
    overwrite: bool = False,
    approvers: list[str] | None = None,
) -> PkiInit:
    """Create a CA, a key + certificate per identity, and a ledger key pair per node.

    `overwrite` replaces the CA and the TLS keys and certificates, never a
    ledger key: a node's existing ``<id>-ledger.key`` is kept (every receipt
    it signed verifies only with it), and reported in `kept_ledger_keys`.
    """
    coordinators = ["coordinator"] if coordinators is None else coordinators
    identities = (
        [Identity(check_party_id(p), Role.PARTY) for p in parties]
        + [Identity(check_party_id(c), Role.COORDINATOR) for c in coordinators]
        + [Identity(check_party_id(d), Role.DEALER) for d in (dealers or [])]
        + [Identity(check_party_id(a), Role.APPROVER) for a in (approvers or [])]
    )
    ids = [i.party_id for i in identities]
    if not parties:
        raise ConfigError("name at least one party")
    if len(set(ids)) != len(ids):
        raise ConfigError("every identity needs its own id (a party, coordinator, dealer or "
                          "approver twice)")
    if (directory / "ca.key").exists() and not overwrite:
        raise ConfigError(f"{directory} already holds a CA; pass --force to replace it")
    nodes = [i.party_id for i in identities if i.role in (Role.PARTY, Role.DEALER)]
    for node in nodes:  # a ledger key that cannot be kept stops everything, before any change
        public, private = directory / f"{node}-ledger.pub", directory / f"{node}-ledger.key"
        if public.exists() and not private.exists():
            raise ConfigError(f"{public} exists without its private key {private.name}; restore "
                              "that key (a PKI command never replaces a ledger key)")
    ca = CertificateAuthority.create()
    ca.save(directory)
    for identity in identities:
        ca.issue_to(directory, identity)
    kept = tuple(node for node in nodes  # every node keeps a signed ledger
                 if not ensure_signing_key(directory / f"{node}-ledger.key",
                                           directory / f"{node}-ledger.pub"))
    return PkiInit(identities, kept)


def load_revocation_list(data: bytes, ca: x509.Certificate,
                         source: str) -> x509.CertificateRevocationList:
    """A revocation list (PEM or DER) checked to be signed by `ca` and to carry a number."""
    try:
        crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_crl(data))
    except ValueError:
        raise ConfigError(f"{source} is not a certificate revocation list") from None
    public_key = ca.public_key()
    if crl.issuer != ca.subject or not isinstance(public_key, ec.EllipticCurvePublicKey) \
            or not crl.is_signature_valid(public_key):
        raise ConfigError(f"{source} is not signed by the federation's CA")
    try:
        crl.extensions.get_extension_for_class(x509.CRLNumber)
    except x509.ExtensionNotFound:
        raise ConfigError(f"{source} has no CRL number (make it with `invisible pki "
                          "revoke`)") from None
    return crl
