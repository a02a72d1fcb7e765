"""Ed25519 keys of a node's ledger (library: `cryptography`).

Each party has a ledger signing key beside its TLS key (``<id>-ledger.key``,
made by ``invisible pki init``) and publishes ``<id>-ledger.pub``; anyone
with the public key can verify the node's receipts and whole chain.

A ledger key outlives any PKI: every receipt and countersigned head ever
issued verifies only with it, so nothing here overwrites one
(:func:`ensure_signing_key` keeps an existing key; rotating a key is a step
of its own, recorded in the ledger: :mod:`invisible.metering.rotation`).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from invisible.errors import ConfigError


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def write_signing_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write a private key (mode 0600, synced to disk); refuses to overwrite a file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"ledger key file {path} already exists; it is never replaced") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        handle.flush()
        os.fsync(handle.fileno())


def generate_signing_key(private_path: Path, public_path: Path) -> None:
    """A new key pair; refuses to overwrite either file."""
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"ledger key file {path} already exists; it is never replaced")
    key = Ed25519PrivateKey.generate()
    write_signing_key(private_path, key)
    public_path.write_bytes(public_pem(key))


def ensure_signing_key(private_path: Path, public_path: Path) -> bool:
    """Make a key pair unless one exists; True if made, False if the existing one was kept.

    A missing public key is written again from the private key; a public key
    without its private key, or one that does not match it, is an error (a
    new key would orphan every receipt signed before).
    """
    if not private_path.exists():
        if public_path.exists():
            raise ConfigError(f"{public_path} exists without its private key "
                              f"{private_path.name}; restore that key (a PKI command never "
                              "replaces a ledger key)")
        generate_signing_key(private_path, public_path)
        return True
    key = load_signing_key(private_path)
    if not public_path.exists():
        public_path.write_bytes(public_pem(key))
    elif public_raw(load_public_key(public_path)) != public_raw(key.public_key()):
        raise ConfigError(f"{public_path} is not the public half of {private_path.name}; "
                          "restore the published key (a PKI command never replaces a ledger key)")
    return False


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"ledger signing key file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"ledger signing key file unreadable: {path} ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise ConfigError(f"not an unencrypted PEM private key: {path}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"ledger signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"ledger public key file not found: {path}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"not a PEM public key: {path}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"ledger public key {path} is not an Ed25519 key")
    return key


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signature_valid(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
