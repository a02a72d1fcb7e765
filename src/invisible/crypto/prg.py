"""Cryptographic pseudo-random generator: an AES-256-CTR keystream.

Everything that protects data (shares, masks, seeds, later triples and noise)
is drawn from a :class:`Prg`. Production code makes one with
:meth:`Prg.from_os` (key from ``os.urandom``) or from a pairwise seed agreed
for one job step; tests may pass a fixed key. numpy's and Python's
statistical generators are never used for anything secret.

Every expansion takes a fresh 64-bit nonce from a counter, so for one key no
keystream block is ever produced twice (2^64 expansions of up to 2^64 blocks
each before a counter could repeat). The counter block is nonce || counter,
both 64-bit big-endian: the same keystream as pycryptodome's AES MODE_CTR
with an 8-byte nonce (a test checks one against the other). The cipher is
OpenSSL's, through `cryptography`: 1.1 ms per 8 MB here against 2.2 ms for
pycryptodome's, and the engine's dealer expands dozens of such streams per
product of 10^6 elements.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32
_MAX_NONCE = 2**64
_CHUNK_BYTES = 1 << 20
_ZEROS = memoryview(bytes(_CHUNK_BYTES))  # never written: the plaintext of every chunk


class Prg:
    """AES-256-CTR keystream generator; thread-safe, deterministic for a given key."""

    __slots__ = ("_key", "_lock", "_nonce")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise ValueError(f"a PRG key must be {KEY_BYTES} bytes")
        self._key = bytes(key)
        self._nonce = 0
        self._lock = threading.Lock()

    @classmethod
    def from_os(cls) -> Prg:
        """A generator keyed from the operating system's entropy source."""
        return cls(os.urandom(KEY_BYTES))

    def __repr__(self) -> str:  # never show the key
        return "Prg(<key hidden>)"

    def _next_nonce(self) -> bytes:
        with self._lock:
            if self._nonce >= _MAX_NONCE:
                raise OverflowError("PRG nonce space exhausted; make a new generator")
            nonce = self._nonce
            self._nonce += 1
        return nonce.to_bytes(8, "big")

    def _keystream(self) -> Any:
        """A fresh AES-256-CTR encryptor: counter block = nonce (8 bytes) || 0 (8 bytes)."""
        counter_block = self._next_nonce() + bytes(8)
        return Cipher(algorithms.AES(self._key), modes.CTR(counter_block)).encryptor()

    def random_bytes(self, n: int) -> bytes:
        """n bytes of keystream from a fresh nonce."""
        if n < 0:
            raise ValueError("byte count must be non-negative")
        return bytes(self._keystream().update(bytes(n)))

    def random_uint64(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Uniform elements of Z_2^64 as a uint64 array of the given shape."""
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        count = int(np.prod(dims, dtype=np.int64))
        return self.fill_uint64(np.empty(count, dtype=np.uint64)).reshape(dims)

    def fill_uint64(self, out: np.ndarray) -> np.ndarray:
        """Overwrite a C-contiguous uint64 array with fresh keystream; returns it."""
        if out.dtype != np.uint64 or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("fill_uint64 needs a writeable C-contiguous uint64 array")
        if out.size:
            # Encrypt a cache-resident block of zeros chunk by chunk into the output: one pass
            # over the output's memory (zeroing it first and encrypting in place was two
            # passes: 19 ms per 64 MB here against 13 ms).
            target = out.reshape(-1).view(np.uint8).data
            stream = self._keystream()
            total = len(target)
            for start in range(0, total - _CHUNK_BYTES + 1, _CHUNK_BYTES):
                stream.update_into(_ZEROS, target[start:start + _CHUNK_BYTES])
            tail = total % _CHUNK_BYTES
            if tail:
                stream.update_into(_ZEROS[:tail], target[total - tail:])
        return out
