"""Paillier keys: `phe` keys plus the Damgård-Jurik-Nielsen obfuscation base.

A public key here is phe's `PaillierPublicKey` (n, g = n + 1) together with
an obfuscation base hs. Any hs^a is an n-th residue, so (1 + m n) hs^a mod
n^2 is an ordinary Paillier ciphertext that phe decrypts; hs is public and
reveals nothing about the factors of n.

The base follows a public rule, so that a key holder cannot hand out a weak
one (with hs = 1 every ciphertext is 1 + m n, readable by anyone):

    x_k = SHAKE-256("invisible/paillier/djn-base/v1" | u32 len(n) | n |
                    u32 len(context) | context | u32 k), |n| + 128 bits, mod n
    x   = x_k for the least k = 0, 1, ... with gcd(x_k, n) = 1 and x_k^2 != +-1 mod n
    h   = -x^2 mod n,   hs = h^n mod n^2

where n is big-endian in ceil(|n| / 8) bytes and `context` names the job and
the key holder. The key holder computes hs by this rule and every party that
receives the key recomputes it and refuses any other (a key message is
refused, never corrected). The base is still a random square (the hash is
out of the key holder's control), as DJN's argument needs, and the
fixed-base table of :mod:`.djn` is built from it as before.

The key owner encrypts and decrypts with the Chinese remainder theorem,
working modulo p^2 and q^2 (about four times less work than modulo n^2).
Keys under 2048 bits are refused unless a test asks for them explicitly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import gmpy2
from phe import paillier

from invisible.crypto.prg import Prg

MIN_KEY_BITS = 2048
_BASE_DOMAIN = b"invisible/paillier/djn-base/v1"
#: Obfuscator exponents have |n|/2 bits: DJN's security argument at this length.
EXPONENT_BITS_FRACTION = 2


def random_below(rng: Prg, bound: int) -> int:
    """Uniform in [0, bound) up to a bias under 2^-64: |bound| + 64 bits from the cryptographic
    generator, reduced modulo bound (no rejection loop)."""
    nbytes = (bound.bit_length() + 7) // 8 + 8  # 64 spare bits: negligible bias
    return int.from_bytes(rng.random_bytes(nbytes), "big") % bound


@dataclass(frozen=True)
class PublicKey:
    phe_key: paillier.PaillierPublicKey = field(repr=False)
    hs: int = field(repr=False)

    @property
    def n(self) -> int:
        return int(self.phe_key.n)

    @property
    def nsquare(self) -> int:
        return int(self.phe_key.nsquare)

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @property
    def exponent_bits(self) -> int:
        return self.bits // EXPONENT_BITS_FRACTION

    @property
    def ciphertext_bytes(self) -> int:
        return (self.nsquare.bit_length() + 7) // 8

    def fingerprint(self) -> bytes:
        """SHA-256 over n and hs: names the key in messages and errors."""
        width = (self.nsquare.bit_length() + 7) // 8
        return hashlib.sha256(self.n.to_bytes(width, "big") + self.hs.to_bytes(width, "big")).digest()

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, fingerprint={self.fingerprint().hex()[:16]})"

    def to_bytes(self) -> bytes:
        width = self.ciphertext_bytes
        return (width.to_bytes(4, "big") + self.n.to_bytes(width, "big")
                + self.hs.to_bytes(width, "big"))

    @classmethod
    def from_bytes(cls, data: bytes, *, context: bytes = b"",
                   allow_insecure: bool = False) -> PublicKey:
        """Parse a public key; its obfuscation base must be the public rule's for `context`."""
        if len(data) < 4:
            raise ValueError("a Paillier public key message is too short")
        width = int.from_bytes(data[:4], "big")
        if len(data) != 4 + 2 * width:
            raise ValueError("a Paillier public key message has the wrong length")
        n = int.from_bytes(data[4:4 + width], "big")
        hs = int.from_bytes(data[4 + width:], "big")
        check_key_bits(n.bit_length(), allow_insecure)
        if hs != obfuscation_base(n, context):
            raise ValueError("a Paillier public key's obfuscation base does not follow the "
                             "public rule")
        return cls(paillier.PaillierPublicKey(n), hs)


@dataclass(frozen=True)
class PrivateKey:
    public_key: PublicKey
    phe_key: paillier.PaillierPrivateKey = field(repr=False)

    def __repr__(self) -> str:
        return f"PrivateKey(<hidden>, public={self.public_key!r})"

    def decrypt_raw(self, ciphertext: int) -> int:
        """The plaintext in [0, n), by CRT (phe's raw_decrypt works modulo p^2 and q^2)."""
        return int(self.phe_key.raw_decrypt(int(ciphertext)))

    def obfuscator_crt(self, exponent: int) -> int:
        """hs^exponent mod n^2, computed modulo p^2 and q^2 and recombined (owner only)."""
        p, q = int(self.phe_key.p), int(self.phe_key.q)
        p2, q2 = p * p, q * q
        hs = self.public_key.hs
        on_p = gmpy2.powmod(hs % p2, exponent % (p * (p - 1)), p2)
        on_q = gmpy2.powmod(hs % q2, exponent % (q * (q - 1)), q2)
        # CRT: x = on_p + p2 * ((on_q - on_p) * p2^-1 mod q2)
        return int(on_p + p2 * ((on_q - on_p) * gmpy2.invert(p2, q2) % q2))


def check_key_bits(bits: int, allow_insecure: bool) -> None:
    if bits < MIN_KEY_BITS and not allow_insecure:
        raise ValueError(f"Paillier keys under {MIN_KEY_BITS} bits are refused (got {bits})")


def obfuscation_base(n: int, context: bytes = b"") -> int:
    """hs for the modulus n and `context`, by the public rule of the module docstring."""
    if n < 3 or n % 2 == 0:
        raise ValueError("a Paillier modulus must be odd and greater than 2")
    width = (n.bit_length() + 7) // 8
    prefix = (_BASE_DOMAIN + width.to_bytes(4, "big") + n.to_bytes(width, "big")
              + len(context).to_bytes(4, "big") + context)
    for counter in range(64):  # for a genuine key the first candidate is taken
        digest = hashlib.shake_256(prefix + counter.to_bytes(4, "big")).digest(width + 16)
        x = gmpy2.mpz(int.from_bytes(digest, "big")) % n
        square = x * x % n
        if gmpy2.gcd(x, n) == 1 and square not in (1, n - 1):
            return int(gmpy2.powmod(n - square, n, gmpy2.mpz(n) * n))
    raise ValueError("a Paillier modulus yields no obfuscation base (it is not a valid key)")


def generate_keypair(rng: Prg, bits: int = MIN_KEY_BITS, *, context: bytes = b"",
                     allow_insecure: bool = False) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair whose obfuscation base is the public rule's for `context`;
    `allow_insecure` permits short keys (tests only).

    phe draws the primes from the operating system's generator; `rng` is not
    used since the base became public (kept so that callers need not change).
    """
    check_key_bits(bits, allow_insecure)
    phe_public, phe_private = paillier.generate_paillier_keypair(n_length=bits)
    public = PublicKey(phe_public, obfuscation_base(int(phe_public.n), context))
    return public, PrivateKey(public, phe_private)
