"""Single values as `phe.EncryptedNumber`, and phe's JSON form, both ways.

Unpacked encryption uses phe's own encoding (`EncodedNumber`: a mantissa
mod n and a base-16 exponent), so a ciphertext made here is an ordinary
`phe.EncryptedNumber` that phe adds, multiplies and decrypts, and one made
by phe decrypts here. Only the obfuscator differs: DJN, from the pool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import gmpy2
from phe import paillier

from invisible.crypto.paillier.djn import ObfuscatorPool
from invisible.crypto.paillier.keys import PrivateKey, PublicKey


def encrypt_numbers(key: PublicKey, values: Sequence[float | int],
                    pool: ObfuscatorPool) -> list[paillier.EncryptedNumber]:
    phe_key = key.phe_key
    n, nsquare = gmpy2.mpz(key.n), gmpy2.mpz(key.nsquare)
    encodings = [paillier.EncodedNumber.encode(phe_key, v) for v in values]
    obfuscators = pool.take(len(encodings))
    return [paillier.EncryptedNumber(phe_key, int((1 + e.encoding * n) * r % nsquare), e.exponent)
            for e, r in zip(encodings, obfuscators, strict=True)]


def decrypt_numbers(private_key: PrivateKey,
                    numbers: Sequence[paillier.EncryptedNumber]) -> list[float | int]:
    for number in numbers:
        if number.public_key != private_key.public_key.phe_key:
            raise ValueError("an encrypted number is under a foreign key")
    return [private_key.phe_key.decrypt(number) for number in numbers]


def to_phe_json(key: PublicKey, numbers: Sequence[paillier.EncryptedNumber]) -> str:
    """phe's documented serialisation: the public key (g, n) and (ciphertext, exponent) pairs."""
    return json.dumps({
        "public_key": {"g": int(key.phe_key.g), "n": int(key.phe_key.n)},
        "values": [(str(x.ciphertext(be_secure=False)), x.exponent) for x in numbers],
    })


def from_phe_json(text: str) -> tuple[paillier.PaillierPublicKey, list[paillier.EncryptedNumber]]:
    data: Any = json.loads(text)
    phe_key = paillier.PaillierPublicKey(n=int(data["public_key"]["n"]))
    return phe_key, [paillier.EncryptedNumber(phe_key, int(c), int(e)) for c, e in data["values"]]
