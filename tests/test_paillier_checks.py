"""The Paillier engine's own checks, unit by unit and without worker processes.

Guards what the 3-party tests pass over: exponents drawn below their bound
with 64 spare bits, the owner's CRT obfuscator for exponents of any size,
a public key named by its fingerprint only, every field of a received
ciphertext vector checked with an error naming the rule, every ciphertext
validated, vectors added only under one key, packing and length, and
re-randomisation that changes every ciphertext but no plaintext.
"""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest

from invisible.crypto.paillier import vector as cipher
from invisible.crypto.paillier.keys import (
    PrivateKey,
    PublicKey,
    generate_keypair,
    obfuscation_base,
    random_below,
)
from invisible.crypto.paillier.packing import Packing
from invisible.crypto.prg import Prg


class InlineObfuscators:
    """hs^a mod n^2 computed in this process: the ObfuscatorPool's interface, no workers."""

    def __init__(self, key: PublicKey) -> None:
        self.key, self.rng = key, Prg.from_os()

    def take(self, count: int) -> list[int]:
        bound = 1 << self.key.exponent_bits
        return [pow(self.key.hs, random_below(self.rng, bound), self.key.nsquare)
                for _ in range(count)]


class CountingPrg:
    """Records how many bytes each draw asks of a real generator."""

    def __init__(self) -> None:
        self.prg, self.requests = Prg.from_os(), []

    def random_bytes(self, n: int) -> bytes:
        self.requests.append(n)
        return self.prg.random_bytes(n)


@pytest.fixture(scope="module")
def keys() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(Prg.from_os())


@pytest.fixture(scope="module")
def obfuscators(keys):
    return InlineObfuscators(keys[0])


def encrypted(keys, obfuscators, values, additions=3):
    packing = Packing.plan(keys[0].bits, 10**6, additions)
    return cipher.encrypt(keys[0], packing, np.asarray(values, dtype=np.int64), obfuscators)


# --- random_below: the obfuscator exponents ---------------------------------------------------

@pytest.mark.parametrize("bound", [1, 2, 3, 255, 256, 257, 2**64, 3 * 2**1000 + 1, 2**1024])
def test_random_below_stays_below_its_bound_and_reaches_its_top_half(bound):
    draws = [random_below(Prg.from_os(), bound) for _ in range(64)]
    assert all(0 <= d < bound for d in draws)
    if bound > 1:  # the top half is reached: no byte of the range is left undrawn
        assert max(draws) >= bound // 2


@pytest.mark.parametrize("bits", [*range(1, 80), 1023, 1024, 1025, 2047, 2048])
def test_random_below_draws_64_spare_bits_rounded_up_to_whole_bytes(bits):
    """Reducing a draw of |bound| + 64 bits modulo bound leaves a bias under 2^-64."""
    rng = CountingPrg()
    random_below(rng, (1 << bits) - 1 if bits > 1 else 1)
    random_below(rng, 1 << (bits - 1))
    for bound_bits, requested in zip((bits, bits), rng.requests, strict=True):
        assert 64 <= 8 * requested - bound_bits < 72


def test_random_below_is_uniform_on_a_small_bound():
    rng = Prg.from_os()
    counts = np.bincount([random_below(rng, 3) for _ in range(3000)], minlength=3)
    assert len(counts) == 3 and all(850 < c < 1150 for c in counts)


# --- keys -------------------------------------------------------------------------------------

def test_a_public_key_shows_its_size_and_a_64_bit_fingerprint_only(keys):
    public = keys[0]
    assert repr(public) == f"PublicKey(bits=2048, fingerprint={public.fingerprint().hex()[:16]})"


def test_the_owner_crt_obfuscator_is_hs_to_any_exponent(keys):
    """Exponents beyond p(p - 1), the order bound modulo p^2, reduce correctly on both primes."""
    public, private = keys
    p, q = int(private.phe_key.p), int(private.phe_key.q)
    rng = Prg.from_os()
    exponents = [0, 1, p * (p - 1), q * (q - 1) + 1, public.nsquare + 12345,
                 *(random_below(rng, 1 << 4200) for _ in range(2))]
    for exponent in exponents:
        assert private.obfuscator_crt(exponent) == gmpy2.powmod(public.hs, exponent, public.nsquare)


# --- the wire: every header field is checked --------------------------------------------------

# The refusals' messages, whole: they name the rule that was broken and never a value.
HEADROOM = "^the declared number of additions does not fit the packing headroom$"
COUNT_OR_WIDTH = "^the ciphertext count or width does not match the declared values$"
OUTSIDE = r"^a ciphertext is outside \(0, n\^2\)$"
SHARES_A_FACTOR = "^a ciphertext shares a factor with n$"
PACKING_DIFFERS = "^the ciphertexts' packing differs from the job's$"
ONE_KEY_PACKING_LENGTH = "^only vectors under one key, packing and length can be added$"
BEYOND_ADDITIONS = "^adding these vectors would exceed the packing's declared additions$"


def retold(message: bytes, **fields: int | bytes) -> bytes:
    """The message with some header fields replaced (names as in the wire format)."""
    names = ("magic", "version", "fingerprint", "slot_bytes", "slots", "bias", "additions",
             "count", "summed", "ciphertexts", "width")
    header = dict(zip(names, cipher._HEADER.unpack_from(message), strict=True))
    header.update(fields)
    return cipher._HEADER.pack(*header.values()) + message[cipher._HEADER.size:]


def test_a_vector_round_trips_the_wire(keys, obfuscators):
    vector = encrypted(keys, obfuscators, np.arange(-150, 150))
    assert len(vector.ciphertexts) > 1
    received = cipher.CiphertextVector.from_bytes(vector.to_bytes(), keys[0], vector.packing)
    assert received == vector
    assert len(vector.to_bytes()) == cipher._HEADER.size + len(vector.ciphertexts) * 512


@pytest.mark.parametrize(("tamper", "rule"), [
    (lambda m, v: m[:cipher._HEADER.size - 1], "^a ciphertext vector is shorter than its header$"),
    (lambda m, v: retold(m, magic=b"IVPD"), "^not a ciphertext vector of this version$"),
    (lambda m, v: retold(m, version=2), "^not a ciphertext vector of this version$"),
    (lambda m, v: retold(m, fingerprint=bytes(32)), "^the ciphertexts are under a foreign key$"),
    (lambda m, v: retold(m, slot_bytes=v.packing.slot_bytes + 1), PACKING_DIFFERS),
    (lambda m, v: retold(m, slots=v.packing.slots - 1), PACKING_DIFFERS),
    (lambda m, v: retold(m, bias=v.packing.bias + 1), PACKING_DIFFERS),
    (lambda m, v: retold(m, additions=v.packing.additions + 1), PACKING_DIFFERS),
    (lambda m, v: retold(m, summed=0), HEADROOM),
    (lambda m, v: retold(m, summed=v.packing.additions + 1), HEADROOM),
    (lambda m, v: retold(m, width=v.key.ciphertext_bytes - 1), COUNT_OR_WIDTH),
    (lambda m, v: retold(m, ciphertexts=2), COUNT_OR_WIDTH),
    (lambda m, v: retold(m, count=v.packing.slots + 1), COUNT_OR_WIDTH),
    (lambda m, v: m + b"\0", "^the ciphertext vector's length does not match its header$"),
    (lambda m, v: m[:-1], "^the ciphertext vector's length does not match its header$"),
])
def test_every_header_field_of_a_received_vector_is_checked(keys, obfuscators, tamper, rule):
    vector = encrypted(keys, obfuscators, [3, -4, 5, 6])
    with pytest.raises(ValueError, match=rule):
        cipher.CiphertextVector.from_bytes(tamper(vector.to_bytes(), vector), keys[0],
                                           vector.packing)


def test_an_empty_vector_is_only_its_header_and_is_received(keys, obfuscators):
    vector = encrypted(keys, obfuscators, [])
    assert vector.ciphertexts == () and len(vector.to_bytes()) == cipher._HEADER.size
    assert cipher.CiphertextVector.from_bytes(vector.to_bytes(), keys[0], vector.packing) == vector


def test_a_sum_of_exactly_the_declared_additions_is_received(keys, obfuscators):
    vector = cipher.add([encrypted(keys, obfuscators, [1, 2])] * 3)
    received = cipher.CiphertextVector.from_bytes(vector.to_bytes(), keys[0], vector.packing)
    assert received.summed == 3 and received.ciphertexts == vector.ciphertexts


# --- every ciphertext is validated ------------------------------------------------------------

def test_ciphertexts_inside_the_group_are_accepted(keys):
    n = keys[0].n
    cipher.check_ciphertexts(n, [1, 2, n - 1, n + 1, n * n - 1])


@pytest.mark.parametrize(("bad", "rule"), [
    (lambda n, p, q: 0, OUTSIDE),
    (lambda n, p, q: -1, OUTSIDE),
    (lambda n, p, q: n * n, OUTSIDE),
    (lambda n, p, q: n * n + 1, OUTSIDE),
    (lambda n, p, q: p, SHARES_A_FACTOR),
    (lambda n, p, q: 7 * q, SHARES_A_FACTOR),
    (lambda n, p, q: 3 * n, SHARES_A_FACTOR),
])
def test_a_ciphertext_outside_the_group_is_refused_wherever_it_stands(keys, bad, rule):
    n, private = keys[0].n, keys[1].phe_key
    value = bad(n, int(private.p), int(private.q))
    for position in (0, 1, 4):
        ciphertexts = [2] * 5
        ciphertexts[position] = value
        with pytest.raises(ValueError, match=rule):
            cipher.check_ciphertexts(n, ciphertexts)


# --- encrypt, add, re-randomise, decrypt ------------------------------------------------------

def test_encryption_declares_its_length_and_one_input(keys, obfuscators):
    values = np.arange(-60, 70, dtype=np.int64)
    vector = encrypted(keys, obfuscators, values)
    assert (vector.count, vector.summed) == (130, 1)
    assert len(vector.ciphertexts) == vector.packing.ciphertexts_for(130)
    assert np.array_equal(cipher.decrypt(keys[1], vector), values)


def test_vectors_are_added_only_under_one_key_packing_and_length(keys, obfuscators):
    vector = encrypted(keys, obfuscators, [1, 2, 3])
    other_key = generate_keypair(Prg.from_os())
    others = {
        "key": encrypted(other_key, InlineObfuscators(other_key[0]), [1, 2, 3]),
        "packing": encrypted(keys, obfuscators, [1, 2, 3], additions=4),
        "length": encrypted(keys, obfuscators, [1, 2, 3, 4]),
    }
    for other in others.values():
        for pair in ([vector, other], [other, vector]):
            with pytest.raises(ValueError, match=ONE_KEY_PACKING_LENGTH):
                cipher.add(pair)


def test_a_sum_uses_exactly_the_declared_additions_and_no_more(keys, obfuscators):
    vectors = [encrypted(keys, obfuscators, [i, -i, 2 * i]) for i in (5, 6, 7)]
    total = cipher.add(vectors)
    assert total.summed == 3 and total.count == 3
    assert cipher.decrypt(keys[1], total).tolist() == [18, -18, 36]
    with pytest.raises(ValueError, match=BEYOND_ADDITIONS):
        cipher.add([total, vectors[0]])


def test_re_randomising_changes_every_ciphertext_and_no_plaintext(keys, obfuscators):
    values = np.arange(200, dtype=np.int64) - 100
    vector = cipher.add([encrypted(keys, obfuscators, values)] * 2)
    fresh = cipher.rerandomise(vector, obfuscators)
    assert (fresh.key, fresh.packing, fresh.count, fresh.summed) == (
        vector.key, vector.packing, vector.count, vector.summed)
    assert len(fresh.ciphertexts) == len(vector.ciphertexts) > 1
    assert all(a != b for a, b in zip(fresh.ciphertexts, vector.ciphertexts, strict=True))
    assert np.array_equal(cipher.decrypt(keys[1], fresh), 2 * values)


@pytest.mark.parametrize("change", [-1, 1])
def test_obfuscators_are_matched_one_to_one_with_plaintexts(keys, obfuscators, change):
    """A pool that hands out one obfuscator too few or too many fails the encryption and the
    re-randomisation: no plaintext is dropped or left without fresh randomness."""
    vector = encrypted(keys, obfuscators, np.arange(300))

    class Miscounting:
        def take(self, count):
            return obfuscators.take(count + change)

    with pytest.raises(ValueError, match="zip"):
        cipher.encrypt(keys[0], vector.packing, np.arange(300, dtype=np.int64), Miscounting())
    with pytest.raises(ValueError, match="zip"):
        cipher.rerandomise(vector, Miscounting())


def test_decryption_refuses_a_vector_under_another_key(keys, obfuscators):
    other_key = generate_keypair(Prg.from_os())
    vector = encrypted(other_key, InlineObfuscators(other_key[0]), [1])
    with pytest.raises(ValueError, match="^the ciphertexts are under a foreign key$"):
        cipher.decrypt(keys[1], vector)


def test_a_decryption_worker_decrypts_as_the_owner_does(keys, obfuscators, monkeypatch):
    """What each worker process runs, run here: its key is rebuilt from n, p and q alone."""
    public, private = keys
    monkeypatch.setattr(cipher, "_DECRYPTOR", {})
    monkeypatch.setattr(cipher, "exit_with_parent", lambda: None)  # not this test's process
    cipher._init_decryptor(public.n, int(private.phe_key.p), int(private.phe_key.q))
    vector = encrypted(keys, obfuscators, np.arange(100, dtype=np.int64))
    batch = list(vector.ciphertexts)
    assert cipher._decrypt_batch(batch) == [private.decrypt_raw(c) for c in batch]
    assert cipher._decrypt_batch([]) == []
    assert all(isinstance(p, int) for p in cipher._decrypt_batch(batch))



def test_a_vector_split_across_worker_processes_decrypts_to_every_value_once(keys, obfuscators):
    """Long enough for the pool (4 ciphertexts a worker or more), in uneven parts."""
    private = keys[1]
    values = np.arange(-700, 700, dtype=np.int64)
    vector = encrypted(keys, obfuscators, values, additions=1)
    assert len(vector.ciphertexts) >= 4 * 3 and len(vector.ciphertexts) % 3 != 0
    with cipher.decryption_pool(private, workers=3) as pool:
        split = cipher.decrypt(private, vector, pool=pool, workers=3)
    assert np.array_equal(split, cipher.decrypt(private, vector))
    assert np.array_equal(split, values)


def test_a_public_key_message_shorter_than_its_width_field_is_too_short():
    for data in (b"", b"\x00\x00\x01"):
        with pytest.raises(ValueError, match="^a Paillier public key message is too short$"):
            PublicKey.from_bytes(data)
    for data in (b"\x00\x00\x00\x02\x01", b"\x00\x00\x00\x01\x01\x02\x03"):
        with pytest.raises(ValueError,
                           match="^a Paillier public key message has the wrong length$"):
            PublicKey.from_bytes(data)
    # four bytes are a width (of 0): read as a key of 0 bits, refused as such
    with pytest.raises(ValueError, match=r"^Paillier keys under 2048 bits are refused \(got 0\)$"):
        PublicKey.from_bytes(b"\x00\x00\x00\x00")


def test_decryption_workers_are_spawned_not_forked_and_as_many_as_asked(keys):
    """Forking a node's process (its gRPC threads) can deadlock the child: the pool starts
    clean interpreters, which get only n, p and q."""
    with cipher.decryption_pool(keys[1], workers=3) as pool:
        assert pool._mp_context.get_start_method() == "spawn"
        assert pool._max_workers == 3


def test_a_public_key_round_trips_its_message_and_a_wrong_base_is_named(keys):
    public = keys[0]
    message = public.to_bytes()
    back = PublicKey.from_bytes(message)
    assert (back.n, back.hs) == (public.n, public.hs)
    forged = message[:-1] + bytes([message[-1] ^ 1])  # the obfuscation base's last byte
    with pytest.raises(ValueError, match="^a Paillier public key's obfuscation base does not "
                                         "follow the public rule$"):
        PublicKey.from_bytes(forged)


# The obfuscation base is a public rule (keys.py's docstring) every party applies to a key
# it is given: these values pin it, so that a change to any of its steps shows.
KAT_MODULUS = (2**255 - 19) * (2**129 - 25)  # 384 bits: whole bytes, as real moduli are
KAT_BASES = {
    b"": int("6c0b037df19a4b163696ee31691268f94a32758df608992461e7f442cb520f5ebdb9d39741124d"
             "1b8c6b8f977174cb01a7de40b1d50358e9aba7ff8a33456641dc7b8d1664a5994ce27d4118be0c"
             "ee382e984c49d4b3933970254f1435dc91e5", 16),
    b"job-7": int("9e3cf5cac7abdb30ea6a8f22d7d82c452aab06517e7f2550d6c9c1e1afcf7f673f4ea0f93"
                  "35c373558f1d2e93df147c9b72a11f1a0cc6bac4526b543e08dd77c745578e36a96921823"
                  "2dbb61ff7ec0f1b505d25c0b3f34eed243fec6f16dc6fd", 16),
}


def test_the_obfuscation_base_follows_the_public_rule_exactly():
    for context, base in KAT_BASES.items():
        assert obfuscation_base(KAT_MODULUS, context) == base
    assert obfuscation_base(9) == 53  # 9 = 3^2 is odd and has units whose square is not +-1


@pytest.mark.parametrize("n", [0, 1, 2, 4, 10**6])
def test_an_even_or_tiny_modulus_has_no_obfuscation_base(n):
    with pytest.raises(ValueError, match="^a Paillier modulus must be odd and greater than 2$"):
        obfuscation_base(n)


@pytest.mark.parametrize("n", [3, 5])
def test_a_modulus_whose_units_all_square_to_plus_or_minus_one_is_refused(n):
    """Mod 3 and mod 5 every unit squares to 1 or n - 1: no candidate may be taken."""
    with pytest.raises(ValueError, match=r"^a Paillier modulus yields no obfuscation base "
                                         r"\(it is not a valid key\)$"):
        obfuscation_base(n)


def test_a_public_key_s_fingerprint_is_pinned():
    """Parties compare fingerprints to agree on a key: the encoding it hashes is fixed."""
    from phe import paillier

    key = PublicKey(paillier.PaillierPublicKey(KAT_MODULUS), KAT_BASES[b""])
    assert key.fingerprint().hex() == (
        "293f47b44fb981618de485589480976ad63f8bf5043da1f00925e955087d57d0")
