"""Many fixed-point values per Paillier plaintext, with headroom for additions.

Values arrive as int64 fixed-point integers with |v| <= bias. Each becomes
v + bias, in [0, 2 bias], so no slot is ever negative: phe's encoding of a
negative number as n - |v| would borrow across slots. A plaintext holds
`slots` slots of `slot_bytes` bytes; after adding up to `additions` packed
vectors, a slot holds at most 2 x bias x additions, which the slot width is
chosen to hold — overflow is impossible by construction, and anything that
would break these bounds is refused before encrypting. After decrypting a
sum of m vectors, subtracting m x bias gives the sum of the values.

The bias is a bound on encoded values, so it follows the encoding's own
rule: a real |x| <= B becomes round(x 2^f) (:mod:`invisible.crypto.fixedpoint`),
at most round(B 2^f) in magnitude, which is not B 2^f truncated (B = 1.3,
f = 16: 85197, not 85196). :func:`fixed_point_bias` gives rows x round(B 2^f),
the bias of a sum of `rows` such values, so every value the encoding accepts
(or clips to the bound) is packed.

Packing and unpacking act on whole arrays (numpy); the only Python loop is
one `int.from_bytes` / `int.to_bytes` per plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from invisible.crypto.fixedpoint import encode

MAX_SLOT_BYTES = 8


def fixed_point_bias(bound: float, fractional_bits: int, rows: int = 1) -> int:
    """The largest |v| of a sum of `rows` values with |x| <= bound, each encoded with
    `fractional_bits` by :func:`invisible.crypto.fixedpoint.encode`: rows x (the bound's own
    encoding), exact in integers; at least 1 (a bound under 2^-(f+1) encodes to 0)."""
    if rows < 1:
        raise ValueError("a bias needs at least one row")
    one_value = int(encode(np.array([bound]), bound, fractional_bits).view(np.int64)[0])
    return max(1, rows * one_value)


@dataclass(frozen=True)
class Packing:
    slot_bytes: int
    slots: int
    bias: int
    additions: int

    @classmethod
    def plan(cls, key_bits: int, bias: int, additions: int) -> Packing:
        """The widest packing that holds `additions` summed vectors of |v| <= bias."""
        if bias < 1 or additions < 1:
            raise ValueError("packing needs a positive bias and addition count")
        largest = 2 * bias * additions
        slot_bytes = (largest.bit_length() + 7) // 8
        if slot_bytes > MAX_SLOT_BYTES:
            raise ValueError(
                f"{additions} additions of values up to {bias} (fixed point) need "
                f"{largest.bit_length()} bits per slot; at most {8 * MAX_SLOT_BYTES} are supported"
            )
        slots = (key_bits - 1) // (8 * slot_bytes)  # every packed plaintext stays below n
        return cls(slot_bytes, slots, bias, additions)

    @property
    def plaintext_bytes(self) -> int:
        return self.slot_bytes * self.slots

    def ciphertexts_for(self, count: int) -> int:
        return -(-count // self.slots)

    def pack(self, values: np.ndarray) -> list[int]:
        """Plaintexts (ints) holding `values` (int64, |v| <= bias), `slots` per plaintext."""
        array = np.asarray(values)
        if array.dtype != np.int64 or array.ndim != 1:
            raise TypeError("packing takes a 1-D int64 array of fixed-point values")
        # min and max, not np.abs: |INT64_MIN| overflows to INT64_MIN and would pass.
        if array.size and (int(array.min()) < -self.bias or int(array.max()) > self.bias):
            raise ValueError("a value exceeds the packing's declared bound")
        shifted = (array + np.int64(self.bias)).view(np.uint64)
        total = self.ciphertexts_for(array.size) * self.slots
        padded = np.zeros(total, dtype="<u8")
        padded[: array.size] = shifted
        slot_view = padded.view(np.uint8).reshape(total, 8)[:, : self.slot_bytes]
        rows = np.ascontiguousarray(slot_view).reshape(-1, self.plaintext_bytes)
        return [int.from_bytes(row.tobytes(), "little") for row in rows]

    def unpack(self, plaintexts: list[int], count: int, summed: int) -> np.ndarray:
        """The int64 sums of `summed` packed vectors, `count` values long."""
        if not 1 <= summed <= self.additions:
            raise ValueError("the number of summed vectors is outside the declared additions")
        raw = b"".join(p.to_bytes(self.plaintext_bytes, "little") for p in plaintexts)
        slots = np.frombuffer(raw, dtype=np.uint8).reshape(-1, self.slot_bytes)
        wide = np.zeros((slots.shape[0], 8), dtype=np.uint8)
        wide[:, : self.slot_bytes] = slots
        values = wide.view("<u8").reshape(-1)[:count].astype(np.int64)
        return values - np.int64(summed * self.bias)
