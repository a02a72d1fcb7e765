"""Vectors of packed Paillier ciphertexts: encrypt, add, re-randomise, decrypt, validate, wire.

Wire format (big-endian), compact and fixed-width — no JSON, no decimal:

    b"IVPC" | version u8 | key fingerprint 32 B | slot_bytes u8 | slots u16 |
    bias u64 | additions u32 | count u64 | summed u32 | ciphertexts u32 |
    width u16 | ciphertexts, each `width` bytes

On receipt every field is checked against what the receiver expects (the
key it holds or was given, the job's packing), and every ciphertext c
against 0 < c < n^2 and gcd(c, n) = 1; anything else is refused with a
:class:`ValueError` that names the rule, never a value.
"""

from __future__ import annotations

import multiprocessing
import struct
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import gmpy2
import numpy as np
from phe import paillier

from invisible.crypto.paillier.djn import ObfuscatorPool
from invisible.crypto.paillier.keys import PrivateKey, PublicKey
from invisible.crypto.paillier.packing import Packing
from invisible.runtime import exit_with_parent

MAGIC = b"IVPC"
VERSION = 1
_HEADER = struct.Struct(">4sB32sBHQIQIIH")


@dataclass(frozen=True)
class CiphertextVector:
    key: PublicKey
    packing: Packing
    count: int
    summed: int
    ciphertexts: tuple[int, ...]

    def __repr__(self) -> str:  # never show ciphertexts
        return (f"CiphertextVector(count={self.count}, ciphertexts={len(self.ciphertexts)}, "
                f"summed={self.summed})")

    def to_bytes(self) -> bytes:
        width = self.key.ciphertext_bytes
        header = _HEADER.pack(
            MAGIC, VERSION, self.key.fingerprint(), self.packing.slot_bytes, self.packing.slots,
            self.packing.bias, self.packing.additions, self.count, self.summed,
            len(self.ciphertexts), width,
        )
        return header + b"".join(c.to_bytes(width, "big") for c in self.ciphertexts)

    @classmethod
    def from_bytes(cls, data: bytes, key: PublicKey, packing: Packing) -> CiphertextVector:
        """Parse and validate a vector that must be under `key` with `packing`."""
        if len(data) < _HEADER.size:
            raise ValueError("a ciphertext vector is shorter than its header")
        (magic, version, fingerprint, slot_bytes, slots, bias, additions, count, summed,
         total, width) = _HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            raise ValueError("not a ciphertext vector of this version")
        if fingerprint != key.fingerprint():
            raise ValueError("the ciphertexts are under a foreign key")
        if Packing(slot_bytes, slots, bias, additions) != packing:
            raise ValueError("the ciphertexts' packing differs from the job's")
        if not 1 <= summed <= packing.additions:
            raise ValueError("the declared number of additions does not fit the packing headroom")
        if width != key.ciphertext_bytes or total != packing.ciphertexts_for(count):
            raise ValueError("the ciphertext count or width does not match the declared values")
        if len(data) != _HEADER.size + total * width:
            raise ValueError("the ciphertext vector's length does not match its header")
        body = data[_HEADER.size:]
        ciphertexts = tuple(int.from_bytes(body[i * width:(i + 1) * width], "big")
                            for i in range(total))
        check_ciphertexts(key.n, ciphertexts)
        return cls(key, packing, count, summed, ciphertexts)


def check_ciphertexts(n: int, ciphertexts: Sequence[int]) -> None:
    """Refuse any received ciphertext c outside 0 < c < n^2 or sharing a factor with n."""
    nsquare = n * n
    for c in ciphertexts:
        if not 0 < c < nsquare:
            raise ValueError("a ciphertext is outside (0, n^2)")
        if gmpy2.gcd(c, n) != 1:
            raise ValueError("a ciphertext shares a factor with n")


def encrypt(key: PublicKey, packing: Packing, values: np.ndarray,
            pool: ObfuscatorPool) -> CiphertextVector:
    """Pack int64 fixed-point values and encrypt each plaintext with a fresh obfuscator."""
    plaintexts = packing.pack(values)
    n, nsquare = gmpy2.mpz(key.n), gmpy2.mpz(key.nsquare)
    obfuscators = pool.take(len(plaintexts))
    ciphertexts = tuple(int((1 + m * n) * r % nsquare)
                        for m, r in zip(plaintexts, obfuscators, strict=True))
    return CiphertextVector(key, packing, int(np.asarray(values).size), 1, ciphertexts)


def add(vectors: Sequence[CiphertextVector]) -> CiphertextVector:
    """The homomorphic sum of vectors under one key and packing, within its headroom."""
    first = vectors[0]
    for other in vectors[1:]:
        if (other.key.fingerprint() != first.key.fingerprint() or other.packing != first.packing
                or other.count != first.count):
            raise ValueError("only vectors under one key, packing and length can be added")
    summed = sum(v.summed for v in vectors)
    if summed > first.packing.additions:
        raise ValueError("adding these vectors would exceed the packing's declared additions")
    nsquare = gmpy2.mpz(first.key.nsquare)
    totals = [gmpy2.mpz(c) for c in first.ciphertexts]
    for other in vectors[1:]:
        totals = [t * c % nsquare for t, c in zip(totals, other.ciphertexts, strict=True)]
    return CiphertextVector(first.key, first.packing, first.count, summed,
                            tuple(int(t) for t in totals))


def rerandomise(vector: CiphertextVector, pool: ObfuscatorPool) -> CiphertextVector:
    """The same plaintexts under fresh randomness: required before a vector that a party's
    private values went into leaves that party."""
    nsquare = gmpy2.mpz(vector.key.nsquare)
    obfuscators = pool.take(len(vector.ciphertexts))
    return CiphertextVector(vector.key, vector.packing, vector.count, vector.summed,
                            tuple(int(gmpy2.mpz(c) * r % nsquare)
                                  for c, r in zip(vector.ciphertexts, obfuscators, strict=True)))


_DECRYPTOR: dict[str, paillier.PaillierPrivateKey] = {}


def _init_decryptor(n: int, p: int, q: int) -> None:
    exit_with_parent()
    _DECRYPTOR["key"] = paillier.PaillierPrivateKey(paillier.PaillierPublicKey(n), p, q)


def _decrypt_batch(ciphertexts: list[int]) -> list[int]:
    key = _DECRYPTOR["key"]
    return [int(key.raw_decrypt(c)) for c in ciphertexts]


def decryption_pool(private_key: PrivateKey, workers: int) -> ProcessPoolExecutor:
    """Worker processes of the key owner that hold its private key (it never leaves the
    machine); start them early so that they are ready when the ciphertexts arrive."""
    phe_key = private_key.phe_key
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_decryptor,
                               initargs=(private_key.public_key.n, int(phe_key.p), int(phe_key.q)))


def decrypt(private_key: PrivateKey, vector: CiphertextVector,
            pool: ProcessPoolExecutor | None = None, workers: int = 1) -> np.ndarray:
    """The int64 sums of the vector's `summed` packed inputs (CRT decryption), in `pool`'s
    processes when given (split in `workers` parts)."""
    if vector.key.fingerprint() != private_key.public_key.fingerprint():
        raise ValueError("the ciphertexts are under a foreign key")
    ciphertexts = list(vector.ciphertexts)
    if pool is None or len(ciphertexts) < 4 * workers:
        plaintexts = [private_key.decrypt_raw(c) for c in ciphertexts]
    else:
        step = -(-len(ciphertexts) // max(1, workers))
        parts = pool.map(_decrypt_batch, [ciphertexts[i:i + step]
                                          for i in range(0, len(ciphertexts), step)])
        plaintexts = [p for part in parts for p in part]
    return vector.packing.unpack(plaintexts, vector.count, vector.summed)
