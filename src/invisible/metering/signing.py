"""Ed25519 keys of a node's ledger (library: `cryptography`).

Each party has a ledger signing key beside its TLS key (``<id>-ledger.key``,
made by ``invisible pki init``) and publishes ``<id>-ledger.pub``; anyone
with the public key can verify the node's receipts and whole chain.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from invisible.errors import ConfigError


def generate_signing_key(private_path: Path, public_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


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
