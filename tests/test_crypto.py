"""The PRG, additive sharing and key agreement: properties and known answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from invisible.crypto.keyagree import (
    EphemeralKeyPair,
    confirmation_tag,
    derive_pairwise_seed,
    tags_equal,
)
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import reconstruct, share

ring_arrays = hnp.arrays(
    np.uint64, hnp.array_shapes(max_dims=3, max_side=6),
    elements=st.integers(0, 2**64 - 1),
)


def test_prg_is_deterministic_per_key_and_differs_across_keys():
    assert np.array_equal(Prg(b"k" * 32).random_uint64(100), Prg(b"k" * 32).random_uint64(100))
    assert not np.array_equal(Prg(b"k" * 32).random_uint64(100), Prg(b"j" * 32).random_uint64(100))


def test_every_expansion_uses_a_fresh_nonce():
    prg = Prg(b"k" * 32)
    first, second = prg.random_bytes(64), prg.random_bytes(64)
    assert first != second
    # The second expansion is not the continuation of the first keystream either.
    assert Prg(b"k" * 32).random_bytes(128)[64:] != second


@pytest.mark.parametrize("elements", [1, 10, 1 << 17, (1 << 18) + 3])
def test_prg_matches_aes_ctr_keystream(elements):
    # Sizes below, at and across the 1 MiB chunks the PRG encrypts in; the second expansion
    # takes the next nonce.
    from Crypto.Cipher import AES

    key = bytes(range(32))
    prg = Prg(key)
    for nonce in (0, 1):
        expected = AES.new(key, AES.MODE_CTR, nonce=nonce.to_bytes(8, "big"),
                           initial_value=0).encrypt(bytes(8 * elements))
        assert prg.random_uint64(elements).tobytes() == expected


def test_prg_output_looks_uniform():
    bits = np.unpackbits(Prg.from_os().random_uint64(1 << 16).view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.002  # 2^22 bits: sigma is 0.00024


def test_prg_hides_its_key_and_rejects_short_keys():
    assert "k" * 8 not in repr(Prg(b"k" * 32))
    with pytest.raises(ValueError, match="32 bytes"):
        Prg(b"short")


@given(ring_arrays, st.integers(2, 6))
@settings(max_examples=60, deadline=None)
def test_reconstruct_inverts_share(values, n_parties):
    shares = share(values, n_parties, Prg.from_os())
    assert shares.shape == (n_parties, *values.shape)
    assert np.array_equal(reconstruct(shares), values)


@given(ring_arrays, st.integers(2, 5))
@settings(max_examples=40, deadline=None)
def test_sharing_commutes_with_addition(values, n_parties):
    other = values[::-1].copy()
    prg = Prg.from_os()
    summed = share(values, n_parties, prg) + share(other, n_parties, prg)
    assert np.array_equal(reconstruct(summed), values + other)


def test_two_runs_with_identical_inputs_produce_different_shares():
    values = np.arange(1000, dtype=np.uint64)
    first = share(values, 3, Prg.from_os())
    second = share(values, 3, Prg.from_os())
    assert not np.any(first[0] == second[0])  # collisions are 1000 * 2^-64 likely
    assert np.array_equal(reconstruct(first), reconstruct(second))


def test_a_single_share_is_independent_of_the_secret():
    zeros = share(np.zeros(1 << 14, np.uint64), 2, Prg.from_os())[0]
    bits = np.unpackbits(zeros.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.005


def test_sharing_refuses_non_ring_arrays_and_one_party():
    with pytest.raises(TypeError, match="uint64"):
        share(np.arange(3), 3, Prg.from_os())
    with pytest.raises(ValueError, match="at least 2"):
        share(np.arange(3, dtype=np.uint64), 1, Prg.from_os())


def test_x25519_gives_both_sides_the_same_seed_bound_to_job_step_and_pair():
    a, b = EphemeralKeyPair.generate(), EphemeralKeyPair.generate()
    secret = a.shared_secret(b.public_bytes)
    assert secret == b.shared_secret(a.public_bytes)

    def seed(job="j", step="s", x="bank", y="telco"):
        return derive_pairwise_seed(secret, job_id=job, step=step, party_a=x, party_b=y)

    assert seed() == seed(x="telco", y="bank")
    assert len({seed(), seed(job="j2"), seed(step="s2"), seed(y="hospital")}) == 4
    # Length-prefixed fields: moving a character between fields changes the seed.
    assert seed(job="ab", step="c") != seed(job="a", step="bc")


def test_invalid_x25519_public_keys_are_refused():
    key = EphemeralKeyPair.generate()
    with pytest.raises(ValueError, match="invalid"):
        key.shared_secret(bytes(32))  # the all-zero point gives an all-zero secret
    with pytest.raises(ValueError, match="32 bytes"):
        key.shared_secret(b"short")


def test_confirmation_tags_are_directional():
    seed = bytes(32)
    forward = confirmation_tag(seed, sender="a", receiver="b")
    assert tags_equal(forward, confirmation_tag(seed, sender="a", receiver="b"))
    assert not tags_equal(forward, confirmation_tag(seed, sender="b", receiver="a"))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.integers(1, 1200), st.integers(1, 70), st.integers(0, 2**32))
def test_ring_matmul_is_exact_mod_2_64(m, k, n, seed):
    from invisible.crypto import ring

    data = np.random.default_rng(seed)
    a = data.integers(0, 2**64, (m, k), dtype=np.uint64, endpoint=False)
    b = data.integers(0, 2**64, (k, n), dtype=np.uint64, endpoint=False)
    a[0, 0], b[0, 0] = np.uint64(2**64 - 1), np.uint64(2**64 - 1)  # the largest limbs
    small, narrow = ring._SMALL, ring._NARROW
    ring._SMALL, ring._NARROW = 0, 0  # the float64 limb path, whatever the shapes
    try:
        assert np.array_equal(ring.ring_matmul(a, b), np.matmul(a, b))
    finally:
        ring._SMALL, ring._NARROW = small, narrow


def test_ring_matmul_takes_the_limb_path_for_large_products_and_stays_exact():
    from invisible.crypto.ring import ring_matmul

    data = np.random.default_rng(1)
    a = data.integers(0, 2**64, (300, 1100), dtype=np.uint64, endpoint=False)
    b = np.full((1100, 80), 2**64 - 1, dtype=np.uint64)  # every limb at its largest
    assert np.array_equal(ring_matmul(a, b), np.matmul(a, b))


def test_indexed_keys_are_rfc5869_hkdf_sha256_as_pycryptodome_computes_it():
    import os

    from Crypto.Hash import SHA256
    from Crypto.Protocol.KDF import HKDF

    from invisible.crypto.keyagree import _encode_fields, derive_indexed_key

    for index in (0, 1, 7919, 2**40):
        master = os.urandom(32)
        expected = HKDF(master, 32, b"invisible/v1/indexed-key", SHA256,
                        context=_encode_fields("dealer-tuple", str(index)))
        assert derive_indexed_key(master, "dealer-tuple", index) == expected
    assert derive_indexed_key(b"k" * 32, "a", 1) != derive_indexed_key(b"k" * 32, "a", 2)
