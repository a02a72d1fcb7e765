"""Paillier engine: packing, DJN obfuscators, validation, phe interop, the 3-party sum."""

from __future__ import annotations

import itertools
import json

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phe import paillier
from test_channel import run_parties

from invisible.crypto.fixedpoint import encode_clipped
from invisible.crypto.paillier import vector as cipher
from invisible.crypto.paillier.djn import FixedBaseTable, ObfuscatorPool
from invisible.crypto.paillier.interop import (
    decrypt_numbers,
    encrypt_numbers,
    from_phe_json,
    to_phe_json,
)
from invisible.crypto.paillier.keys import PublicKey, generate_keypair, obfuscation_base
from invisible.crypto.paillier.packing import Packing, fixed_point_bias
from invisible.crypto.prg import Prg
from invisible.errors import ProtocolError
from invisible.kinds.paillier_sum import PaillierSumParams
from invisible.protocols.paillier_sum import paillier_sum

_jobs = itertools.count()


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(Prg.from_os())


@pytest.fixture(scope="module")
def pool(keys):
    with ObfuscatorPool(keys[0], workers=2) as obfuscators:
        yield obfuscators


# --- packing ----------------------------------------------------------------------------------

@given(st.integers(1, 2**40), st.integers(1, 20), st.integers(0, 300), st.data())
@settings(max_examples=80, deadline=None)
def test_packing_round_trips_sums_up_to_the_declared_additions(bias, additions, count, data):
    packing = Packing.plan(2048, bias, additions)
    summed = data.draw(st.integers(1, additions))
    vectors = [np.array(data.draw(st.lists(st.integers(-bias, bias), min_size=count,
                                           max_size=count)), dtype=np.int64)
               for _ in range(summed)]
    plaintexts = [sum(parts) for parts in zip(*(packing.pack(v) for v in vectors), strict=True)]
    assert all(p < 2**2047 for p in plaintexts)  # below n by construction
    assert np.array_equal(packing.unpack(plaintexts, count, summed), np.sum(vectors, axis=0))


def test_packing_refuses_values_over_the_bound_and_slots_over_64_bits():
    packing = Packing.plan(2048, 1000, 3)
    assert packing.slot_bytes == 2 and packing.slots == 127
    with pytest.raises(ValueError, match="exceeds the packing's declared bound"):
        packing.pack(np.array([1001], dtype=np.int64))
    with pytest.raises(ValueError, match="at most 64 are supported"):
        Packing.plan(2048, 2**62, 3)
    with pytest.raises(ValueError, match="outside the declared additions"):
        packing.unpack([0], 1, 4)


# --- DJN obfuscators and keys -----------------------------------------------------------------

def test_fixed_base_power_equals_powmod(keys):
    public = keys[0]
    table = FixedBaseTable(public.hs, public.nsquare, 64)
    for exponent in (0, 1, 255, 256, 2**63 + 12345, 2**64 - 1):
        assert table.power(exponent) == pow(public.hs, exponent, public.nsquare)


def test_obfuscators_are_fresh_encryptions_of_zero(keys, pool):
    obfuscators = pool.take(20)
    assert len(set(obfuscators)) == 20
    assert all(keys[1].decrypt_raw(o) == 0 for o in obfuscators)


def test_owner_crt_obfuscator_matches(keys):
    exponent = 0xDEADBEEF_12345678_9ABCDEF0
    assert keys[1].obfuscator_crt(exponent) == pow(keys[0].hs, exponent, keys[0].nsquare)


def test_short_keys_are_refused_outside_tests(keys):
    with pytest.raises(ValueError, match="under 2048 bits are refused"):
        generate_keypair(Prg.from_os(), 1024)
    short, _ = generate_keypair(Prg.from_os(), 1024, allow_insecure=True)
    with pytest.raises(ValueError, match="under 2048 bits are refused"):
        PublicKey.from_bytes(short.to_bytes())
    assert PublicKey.from_bytes(keys[0].to_bytes()) == keys[0]


def test_private_key_never_shows_in_repr(keys):
    assert str(int(keys[1].phe_key.p)) not in repr(keys[1])


# --- vectors ----------------------------------------------------------------------------------

def encrypted(keys, pool, values, additions=3):
    packing = Packing.plan(keys[0].bits, 10**6, additions)
    return packing, cipher.encrypt(keys[0], packing, np.asarray(values, dtype=np.int64), pool)


def test_add_rerandomise_wire_and_decrypt(keys, pool):
    rng = np.random.default_rng(3)  # test data only
    values = [rng.integers(-10**6, 10**6, 500) for _ in range(3)]
    packing = Packing.plan(keys[0].bits, 10**6, 3)
    vectors = [cipher.encrypt(keys[0], packing, v.astype(np.int64), pool) for v in values]
    total = cipher.add(vectors)
    fresh = cipher.rerandomise(total, pool)
    assert not set(fresh.ciphertexts) & set(total.ciphertexts)
    received = cipher.CiphertextVector.from_bytes(fresh.to_bytes(), keys[0], packing)
    assert np.array_equal(cipher.decrypt(keys[1], received), np.sum(values, axis=0))
    with cipher.decryption_pool(keys[1], 2) as decryptors:
        assert np.array_equal(cipher.decrypt(keys[1], received, decryptors, 2),
                              np.sum(values, axis=0))


def test_packed_ciphertexts_are_ordinary_paillier_for_phe(keys, pool):
    packing, vector = encrypted(keys, pool, [5, -7, 11])
    plaintext = int(keys[1].phe_key.raw_decrypt(vector.ciphertexts[0]))
    assert packing.unpack([plaintext], 3, 1).tolist() == [5, -7, 11]


@pytest.mark.parametrize(("tamper", "rule"), [
    (lambda v, k: 0, "outside \\(0, n\\^2\\)"),
    (lambda v, k: k.nsquare, "outside \\(0, n\\^2\\)"),
    (lambda v, k: k.n, "shares a factor with n"),
])
def test_out_of_range_ciphertexts_are_refused(keys, pool, tamper, rule):
    packing, vector = encrypted(keys, pool, [1, 2, 3])
    bad = cipher.CiphertextVector(keys[0], packing, 3, 1,
                                  (tamper(vector, keys[0]), *vector.ciphertexts[1:]))
    with pytest.raises(ValueError, match=rule):
        cipher.CiphertextVector.from_bytes(bad.to_bytes(), keys[0], packing)


def test_a_foreign_key_and_an_overflowing_declaration_are_refused(keys, pool):
    packing, vector = encrypted(keys, pool, [1, 2, 3])
    other, _ = generate_keypair(Prg.from_os())
    with pytest.raises(ValueError, match="foreign key"):
        cipher.CiphertextVector.from_bytes(vector.to_bytes(), other, packing)
    overflowing = cipher.CiphertextVector(keys[0], packing, 3, 4, vector.ciphertexts)
    with pytest.raises(ValueError, match="does not fit the packing headroom"):
        cipher.CiphertextVector.from_bytes(overflowing.to_bytes(), keys[0], packing)
    with pytest.raises(ValueError, match="exceed the packing's declared additions"):
        cipher.add([vector] * 4)
    with pytest.raises(ValueError, match="packing differs"):
        cipher.CiphertextVector.from_bytes(vector.to_bytes(), keys[0],
                                           Packing.plan(keys[0].bits, 10**6, 5))


# --- interop with phe -------------------------------------------------------------------------

def test_interop_with_phe_both_ways_and_its_json(keys, pool):
    ours = encrypt_numbers(keys[0], [1.5, -2.25, 7, 10**9], pool)
    assert [keys[1].phe_key.decrypt(x) for x in ours] == [1.5, -2.25, 7, 10**9]
    assert keys[1].phe_key.decrypt(ours[0] + ours[1] * 2) == -3.0
    theirs = [keys[0].phe_key.encrypt(v) for v in (0.125, -99)]
    assert decrypt_numbers(keys[1], theirs) == [0.125, -99]
    phe_key, parsed = from_phe_json(to_phe_json(keys[0], ours))
    assert phe_key == keys[0].phe_key
    assert [keys[1].phe_key.decrypt(x) for x in parsed] == [1.5, -2.25, 7, 10**9]
    other_public, _ = paillier.generate_paillier_keypair(n_length=2048)
    with pytest.raises(ValueError, match="foreign key"):
        decrypt_numbers(keys[1], [other_public.encrypt(1)])
    assert gmpy2.gcd(ours[0].ciphertext(be_secure=False), keys[0].n) == 1


# --- the three-party sum, on both transports --------------------------------------------------

def test_three_party_paillier_sum_equals_the_plaintext_sum(transport):
    channels = transport.channels(f"paillier-{transport.name}-{next(_jobs)}")
    rng = np.random.default_rng(11)  # test data only
    inputs = {p: rng.integers(-10**9, 10**9, 300).astype(np.int64) for p in channels}
    outputs = run_parties(channels, lambda ch: paillier_sum(
        ch, inputs[ch.party_id], key_holder="gamma", aggregator="alpha", bias=10**9,
        rng=Prg.from_os(), workers=1))
    assert np.array_equal(outputs["gamma"].total, sum(inputs.values()))
    assert outputs["alpha"].total is None and outputs["beta"].total is None


def test_a_bad_aggregator_choice_is_refused(transport):
    channels = transport.channels(f"paillier-bad-{transport.name}-{next(_jobs)}")
    with pytest.raises(ProtocolError, match="aggregator must be a party other than"):
        paillier_sum(channels["alpha"], np.zeros(3, np.int64), key_holder="alpha",
                     aggregator="alpha", bias=10, rng=Prg.from_os())


# --- review findings (issue 11, section 5) ----------------------------------------------------

INT64_MIN = np.iinfo(np.int64).min


def _key_message(n: int, hs: int) -> bytes:
    """A public key message in the wire layout, with an obfuscation base of the sender's choice."""
    width = (2 * n.bit_length() + 7) // 8
    return width.to_bytes(4, "big") + n.to_bytes(width, "big") + hs.to_bytes(width, "big")


@pytest.mark.parametrize("weak", ["one", "minus one", "another n-th residue"])
def test_an_obfuscation_base_off_the_public_rule_is_refused(keys, weak):
    public = keys[0]
    n, nsquare = public.n, public.nsquare
    hs = {"one": 1, "minus one": nsquare - 1, "another n-th residue": pow(4, n, nsquare)}[weak]
    with pytest.raises(ValueError, match="does not follow the public rule"):
        PublicKey.from_bytes(_key_message(n, hs))


def test_the_obfuscation_base_is_the_public_rule_of_the_key_and_the_job(keys):
    public, job = keys[0], b"job-7/key holder gamma"
    assert public.hs == obfuscation_base(public.n)
    assert keys[1].decrypt_raw(public.hs) == 0
    assert PublicKey.from_bytes(public.to_bytes()) == public
    bound, _ = generate_keypair(Prg.from_os(), 1024, context=job, allow_insecure=True)
    assert bound.hs == obfuscation_base(bound.n, job)
    assert PublicKey.from_bytes(bound.to_bytes(), context=job, allow_insecure=True) == bound
    with pytest.raises(ValueError, match="does not follow the public rule"):
        PublicKey.from_bytes(bound.to_bytes(), context=b"another job", allow_insecure=True)


def test_encrypting_parties_refuse_a_key_holder_that_sends_a_weak_obfuscation_base(keys, transport):
    """With hs = 1 every ciphertext is 1 + m n: the aggregator would read the others' values."""
    channels = transport.channels(f"paillier-weak-{transport.name}-{next(_jobs)}")
    honest = keys[0]

    def party(channel):
        if channel.party_id == "gamma":  # the key holder hands out hs = 1
            channel.send_to_each("paillier/public-key", {
                p: _key_message(honest.n, 1) for p in channel.peers})
            return None
        try:
            return paillier_sum(channel, np.array([-5, 123456, 7], np.int64), key_holder="gamma",
                                aggregator="alpha", bias=10**6, rng=Prg.from_os())
        except ProtocolError as exc:
            return exc

    outcome = run_parties(channels, party)
    for name in ("alpha", "beta"):
        assert isinstance(outcome[name], ProtocolError)
        assert "public key that is refused" in str(outcome[name])
        assert "does not follow the public rule" in str(outcome[name])


@pytest.mark.parametrize("with_pool", [True, False])
def test_phe_json_re_randomises_the_results_of_arithmetic(keys, pool, with_pool):
    (x,) = encrypt_numbers(keys[0], [7], pool)
    plain_sum = x + 5  # phe: c_x (1 + 5 n), not re-randomised
    c_plain = plain_sum.ciphertext(be_secure=False)
    text = to_phe_json(keys[0], [plain_sum], pool) if with_pool else to_phe_json(keys[0], [plain_sum])
    _, (sent,) = from_phe_json(text)
    n, nsquare = keys[0].n, keys[0].nsquare
    c_sent = sent.ciphertext(be_secure=False)
    assert c_sent != c_plain
    assert plain_sum.ciphertext(be_secure=False) == c_plain  # the caller's number is unchanged
    # Whoever holds c_x divides it out: without fresh randomness, 1 + 5 n is left (it reads 5).
    quotient = c_sent * pow(x.ciphertext(be_secure=False), -1, nsquare) % nsquare
    assert quotient % n != 1
    assert keys[1].phe_key.decrypt(sent) == 12


@pytest.mark.parametrize(("ciphertext", "rule"), [
    ("zero", "outside \\(0, n\\^2\\)"), ("minus three", "outside \\(0, n\\^2\\)"),
    ("n squared", "outside \\(0, n\\^2\\)"), ("n", "shares a factor with n"),
])
def test_phe_json_with_an_invalid_ciphertext_is_refused(keys, pool, ciphertext, rule):
    n = keys[0].n
    value = {"zero": 0, "minus three": -3, "n squared": n * n, "n": n}[ciphertext]
    text = to_phe_json(keys[0], encrypt_numbers(keys[0], [1, 2], pool))
    data = json.loads(text)
    data["values"][1][0] = str(value)
    with pytest.raises(ValueError, match=rule):
        from_phe_json(json.dumps(data))


@pytest.mark.parametrize("rows", [1, 1000])
def test_values_exactly_at_a_bound_off_the_fixed_point_grid_fit_the_packing(rows):
    """1.3 x 2^16 = 85196.8 encodes as 85197 (rounded): the bias follows the encoding's rule."""
    bound, f = 1.3, 16
    column = np.array([1.3, -1.3, 1.3, 0.0] * (rows // 4 + 1))[: max(rows, 2)]
    encoded, clipped = encode_clipped(column, bound, f)
    assert clipped == 0
    signed = encoded.view(np.int64)
    vector = signed if rows == 1 else np.array([signed[:rows].sum(), -signed[:rows].sum()],
                                               dtype=np.int64)
    bias = fixed_point_bias(bound, f, rows)
    assert bias == rows * 85197
    packing = Packing.plan(2048, bias, 3)
    plaintexts = packing.pack(vector)
    assert np.array_equal(packing.unpack(plaintexts, vector.size, 1), vector)


def test_int64_min_is_refused_by_the_packing_not_wrapped(keys, pool):
    packing = Packing.plan(keys[0].bits, 10**6, 3)
    values = np.array([INT64_MIN, 5, -7], dtype=np.int64)
    with pytest.raises(ValueError, match="exceeds the packing's declared bound"):
        packing.pack(values)
    with pytest.raises(ValueError, match="exceeds the packing's declared bound"):
        cipher.encrypt(keys[0], packing, values, pool)
    with pytest.raises(ValueError, match="exceeds the packing's declared bound"):
        packing.pack(np.array([-(10**6) - 1], dtype=np.int64))
    assert packing.unpack(packing.pack(np.array([-(10**6), 10**6], np.int64)), 2, 1).tolist() == [
        -(10**6), 10**6]


@pytest.mark.parametrize("max_rows", [1, 1000])
def test_a_paillier_sum_job_packs_its_values_exactly_at_the_bound(max_rows):
    params = PaillierSumParams.parse({
        "inputs": {p: {"dataset": "d", "column": "c"} for p in ("alpha", "beta", "gamma")},
        "bound": 1.3, "max_rows": max_rows, "key_holder": "gamma"}, ("alpha", "beta", "gamma"))
    encoded, _ = encode_clipped(np.array([1.3] * max_rows), 1.3, params.fractional_bits)
    total = np.array([encoded.view(np.int64).sum()], dtype=np.int64)  # as local_vector adds rows
    Packing.plan(2048, params.bias, 2).pack(total)
    Packing.plan(2048, params.bias, 2).pack(-total)
