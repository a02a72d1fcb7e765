"""Private set intersection over ristretto255: the protocol against Python's sets.

Known answers: every party's result is exactly its own rows whose ids are in
every party's set, in one order shared by all parties; encodings, duplicates
and forged elements are refused. Over the in-process channel (Hypothesis)
and over gRPC with mTLS between node processes' channels.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rbcl
from hypothesis import given, settings
from hypothesis import strategies as st
from test_channel import run_parties

from invisible.crypto.prg import Prg
from invisible.errors import ConfigError, ProtocolError
from invisible.net.inprocess import InProcessHub
from invisible.protocols.psi import (
    POINT_BYTES,
    RING_STEP,
    canonical_id,
    encode_ids,
    exponentiate,
    hash_to_group,
    psi,
)

_jobs = itertools.count()


def run_psi(sets: dict[str, list], channels=None, domain: bytes = b"job-1/customers"):
    channels = channels or InProcessHub(tuple(sets), timeout_s=20.0).channels("psi")
    return run_parties(channels, lambda ch: psi(ch, sets[ch.party_id], domain, Prg.from_os(),
                                                workers=2))


def check_against_sets(sets: dict[str, list], outputs) -> None:
    common = set.intersection(*(set(encode_ids(ids)) for ids in sets.values()))
    for party, ids in sets.items():
        rows = outputs[party].rows
        assert sorted(encode_ids([ids[r] for r in rows])) == sorted(common)
        assert outputs[party].set_sizes == tuple(len(s) for s in sets.values())
    ordered = [[canonical_id(sets[p][r]) for r in outputs[p].rows] for p in sets]
    assert all(order == ordered[0] for order in ordered)  # the same order at every party


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sets(st.integers(0, 60), max_size=25), min_size=2, max_size=4))
def test_every_party_gets_exactly_its_rows_in_the_intersection(id_sets):
    sets = {f"p{i}": list(s) for i, s in enumerate(id_sets)}
    check_against_sets(sets, run_psi(sets))


@pytest.mark.parametrize("sets", [
    {"bank": [1, 2, 3], "telco": [4, 5]},                      # empty intersection
    {"bank": [1, 2, 3, 4], "telco": [2, 3]},                   # one inside the other
    {"bank": list(range(0, 300)), "telco": list(range(150, 450)), "hospital": list(range(100, 200))},
    {"bank": [], "telco": [1, 2]},                             # an empty set
])
def test_known_cases(sets):
    check_against_sets(sets, run_psi(sets))


def test_the_same_sets_over_grpc_between_nodes(transport):
    sets = {"alpha": [f"c{i}" for i in range(0, 500)], "beta": [f"c{i}" for i in range(250, 700)],
            "gamma": [f"c{i}" for i in range(200, 300)]}
    outputs = run_psi(sets, transport.channels(f"psi-{transport.name}-{next(_jobs)}"))
    check_against_sets(sets, outputs)
    assert outputs["alpha"].size == 50


def test_string_ids_are_compared_in_normal_form_c_and_ints_as_decimal_digits():
    composed, decomposed = "Zoë Ødegård 王", "Zoe\u0308 \u00d8dega\u030ard 王"
    assert composed != decomposed and canonical_id(composed) == canonical_id(decomposed)
    assert canonical_id(42) == canonical_id("42") == canonical_id(np.int64(42)) == b"42"
    assert canonical_id("042") != canonical_id(42) and canonical_id(-7) == b"-7"
    sets = {"bank": [composed, 42, 7], "telco": [decomposed, "42", "007"]}
    outputs = run_psi(sets)
    assert sorted(outputs["bank"].rows.tolist()) == [0, 1]
    assert sorted(outputs["telco"].rows.tolist()) == [0, 1]


@pytest.mark.parametrize("bad", [True, 4.0, None, b"bytes"])
def test_an_id_that_is_neither_an_integer_nor_a_string_is_refused(bad):
    with pytest.raises(ConfigError, match="an id must be an integer or a string"):
        canonical_id(bad)


def test_duplicate_ids_are_refused_without_a_count():
    with pytest.raises(ConfigError) as refused:
        encode_ids(["a", "b", "a", 5, "5"])
    message = str(refused.value)
    assert "duplicate ids" in message and not any(ch.isdigit() for ch in message)


def test_the_domain_separates_jobs_and_hashing_lands_on_valid_points():
    ids = encode_ids(list(range(200)))
    one, two = hash_to_group(ids, b"job-1"), hash_to_group(ids, b"job-2")
    assert one.shape == (200, POINT_BYTES) and not np.any(np.all(one == two, axis=1))
    assert all(rbcl.crypto_core_ristretto255_is_valid_point(bytes(p)) for p in one)
    assert np.array_equal(one, hash_to_group(ids, b"job-1", workers=2))


def test_exponentiation_commutes_and_refuses_what_is_not_a_point():
    points = hash_to_group(encode_ids(["a", "b", "c"]), b"d")
    a, b = (rbcl.crypto_core_ristretto255_scalar_random() for _ in range(2))
    assert np.array_equal(exponentiate(exponentiate(points, a), b),
                          exponentiate(exponentiate(points, b), a))
    forged = points.copy()
    forged[1] = 0xFF  # not a canonical encoding
    with pytest.raises(ProtocolError, match="not a valid ristretto255 point") as refused:
        exponentiate(forged, a)
    assert "ff" not in str(refused.value).lower()


def test_a_peer_that_sends_garbage_in_the_ring_fails_the_job():
    hub = InProcessHub(("bank", "telco"), timeout_s=5.0)
    channels = hub.channels("psi-forged")

    def forger(channel):
        channel.send("bank", f"{RING_STEP}/1", np.full((3, POINT_BYTES), 0xFF, np.uint8))
        return None

    def honest(channel):
        return psi(channel, [1, 2, 3], b"d", Prg.from_os())

    with pytest.raises(ProtocolError, match="not a valid ristretto255 point"):
        run_parties(channels, lambda ch: honest(ch) if ch.party_id == "bank" else forger(ch))


def test_each_run_uses_fresh_keys_and_a_fresh_order():
    """The blinded set a party sends differs between two jobs on the same ids (fresh k_i and
    permutation), so runs cannot be linked."""
    sent = []
    for _ in range(2):
        hub = InProcessHub(("bank", "telco"), timeout_s=10.0)
        channels = hub.channels("psi")
        original = channels["telco"].recv_array

        def recording(sender, step, *args, real=original):
            value = real(sender, step, *args)
            if step == f"{RING_STEP}/1":
                sent.append(value.copy())
            return value

        channels["telco"].recv_array = recording
        run_psi({"bank": [1, 2, 3, 4], "telco": [3, 4]}, channels)
    first, second = (set(map(bytes, s)) for s in sent)
    assert len(first) == 4 and not first & second
