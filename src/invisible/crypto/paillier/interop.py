"""Single values as `phe.EncryptedNumber`, and phe's JSON form, both ways.

Unpacked encryption uses phe's own encoding (`EncodedNumber`: a mantissa
mod n and a base-16 exponent), so a ciphertext made here is an ordinary
`phe.EncryptedNumber` that phe adds, multiplies and decrypts, and one made
by phe decrypts here. Only the obfuscator differs: DJN, from the pool.

phe's JSON form leaves with fresh randomness on every ciphertext: a result
of arithmetic (x + 5 is c_x (1 + 5 n), phe's `be_secure=False`) would tell
anyone holding c_x what was added. What comes in is checked as every other
received ciphertext (0 < c < n^2, gcd(c, n) = 1) and its key as every other
received key (its size; g = n + 1); anything else is refused with a
:class:`ValueError` that names the rule, never a value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import gmpy2
from phe import paillier

from invisible.crypto.paillier.djn import ObfuscatorPool
from invisible.crypto.paillier.keys import PrivateKey, PublicKey, check_key_bits
from invisible.crypto.paillier.vector import check_ciphertexts


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


def to_phe_json(key: PublicKey, numbers: Sequence[paillier.EncryptedNumber],
                pool: ObfuscatorPool | None = None) -> str:
    """phe's documented serialisation: the public key (g, n) and (ciphertext, exponent) pairs,
    every ciphertext re-randomised, whatever it is the result of: by fresh DJN obfuscators from
    `pool`, or else by phe's own (`ciphertext(be_secure=True)`, a full r^n: slower)."""
    for number in numbers:
        if number.public_key != key.phe_key:
            raise ValueError("an encrypted number is under a foreign key")
    if pool is None:  # on copies: phe obfuscates in place, the caller's numbers stay as they are
        ciphertexts = [int(paillier.EncryptedNumber(key.phe_key, x.ciphertext(be_secure=False),
                                                    x.exponent).ciphertext(be_secure=True))
                       for x in numbers]
    else:
        nsquare = gmpy2.mpz(key.nsquare)
        ciphertexts = [int(gmpy2.mpz(x.ciphertext(be_secure=False)) * r % nsquare)
                       for x, r in zip(numbers, pool.take(len(numbers)), strict=True)]
    return json.dumps({
        "public_key": {"g": int(key.phe_key.g), "n": int(key.phe_key.n)},
        "values": [(str(c), x.exponent) for c, x in zip(ciphertexts, numbers, strict=True)],
    })


def from_phe_json(text: str, *, allow_insecure: bool = False,
                  ) -> tuple[paillier.PaillierPublicKey, list[paillier.EncryptedNumber]]:
    """Parse phe's JSON form, refusing a short key, g != n + 1 or an invalid ciphertext."""
    try:
        data: Any = json.loads(text)
        n = int(data["public_key"]["n"])
        g = int(data["public_key"].get("g", n + 1))
        pairs = [(int(c), int(e)) for c, e in data["values"]]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValueError("not phe's JSON form of a public key and (ciphertext, exponent) "
                         "pairs") from None
    if n < 3 or n % 2 == 0:
        raise ValueError("a Paillier modulus must be odd and greater than 2")
    check_key_bits(n.bit_length(), allow_insecure)
    if g != n + 1:
        raise ValueError("a Paillier public key's generator g is not n + 1")
    check_ciphertexts(n, [c for c, _ in pairs])
    phe_key = paillier.PaillierPublicKey(n=n)
    return phe_key, [paillier.EncryptedNumber(phe_key, c, e) for c, e in pairs]
