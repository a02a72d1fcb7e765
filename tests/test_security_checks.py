"""Security checks at their edges: each test kills a small, plausible bug that survived the
rest of the suite (issue 17; `scripts/plant.py` plants each and shows it killed).

- the k threshold exactly at k and k - 1;
- the rows quotas count the request's own rows;
- an entry spliced in from another chain signed by the same key breaks the link;
- every ciphertext of a multi-ciphertext vector is validated;
- the aggregator re-randomises the product it sends (it differs, decrypts the same);
- DJN obfuscators use exponents of |n| / 2 bits;
- no key material in any repr, in any encoding.
"""

from __future__ import annotations

import base64
import itertools
import sqlite3

import numpy as np
import pytest
from test_metering import POLICY, fill, use
from test_paillier import encrypted

from invisible.crypto.paillier import djn
from invisible.crypto.paillier import vector as cipher
from invisible.crypto.paillier.djn import ObfuscatorPool
from invisible.crypto.paillier.keys import generate_keypair
from invisible.crypto.prg import Prg
from invisible.metering.ledger import Ledger
from invisible.metering.meter import JobMeta, Meter
from invisible.metering.metrics import NodeMetrics
from invisible.metering.policy import Refusal, parse_policy, threshold_problem
from invisible.metering.signing import generate_signing_key, load_public_key, load_signing_key
from invisible.metering.verify import verify_chain
from invisible.net.inprocess import InProcessChannel, InProcessHub
from invisible.protocols.paillier_sum import SUM_STEP, paillier_sum

_jobs = itertools.count()


@pytest.fixture
def keys(tmp_path):
    """The node's ledger signing key and its public key."""
    generate_signing_key(tmp_path / "bank-ledger.key", tmp_path / "bank-ledger.pub")
    return (load_signing_key(tmp_path / "bank-ledger.key"),
            load_public_key(tmp_path / "bank-ledger.pub"))


@pytest.fixture(scope="module")
def paillier_keys():
    return generate_keypair(Prg.from_os())


@pytest.fixture(scope="module")
def pool(paillier_keys):
    with ObfuscatorPool(paillier_keys[0], workers=2) as obfuscators:
        yield obfuscators


# --- policy: k and the rows quotas ------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 10, 25])
def test_the_k_threshold_holds_exactly_at_k_and_refuses_k_minus_one(k):
    policy = parse_policy({**POLICY, "min_rows": k}, "test")
    assert threshold_problem(policy, use(smallest_cell=k)) is None
    assert threshold_problem(policy, use(smallest_cell=k + 1)) is None
    if k > 1:
        rule, _ = threshold_problem(policy, use(smallest_cell=k - 1))
        assert rule == "k-threshold"


@pytest.mark.parametrize("level", ["rule", "dataset"])
def test_a_rows_quota_counts_the_request_s_own_rows(tmp_path, keys, level):
    allow = dict(POLICY["allow"][0], jobs_per_day=100)
    policy = {**POLICY, "jobs_per_day": 100, "allow": [allow]}
    if level == "rule":
        allow["rows_per_day"] = 150
    else:
        policy["rows_per_day"] = 150
    book = Ledger(tmp_path / "bank-ledger.sqlite", "bank", keys[0])
    meter = Meter("bank", book, {"loans": parse_policy(policy, "test")}, NodeMetrics())
    try:
        with pytest.raises(Refusal, match="rows per day"):  # 200 rows alone pass 150
            meter.admit(JobMeta("big", "analyst", "secure_sum", use(job_id="big", rows=200)))
        meter.admit(JobMeta("a", "analyst", "secure_sum", use(job_id="a", rows=100)))
        with pytest.raises(Refusal, match="rows per day"):  # 100 + 100 pass 150
            meter.admit(JobMeta("b", "analyst", "secure_sum", use(job_id="b", rows=100)))
        meter.admit(JobMeta("c", "analyst", "secure_sum", use(job_id="c", rows=50)))  # 150
    finally:
        book.close()


# --- the ledger's links -----------------------------------------------------------------------

def test_an_entry_spliced_in_from_another_chain_signed_by_the_same_key_breaks_the_link(
        tmp_path, keys):
    """Its own hash and signature are valid (the same node, the same key): only the link to
    the entry before it (and from the one after) tells it does not belong."""
    ours = Ledger(tmp_path / "bank-ledger.sqlite", "bank", keys[0])
    (tmp_path / "other").mkdir()
    theirs = Ledger(tmp_path / "other" / "bank-ledger.sqlite", "bank", keys[0])
    try:
        fill(ours, 3)
        fill(theirs, 3)
        assert verify_chain(ours.entries(), keys[1]).ok
        assert verify_chain(theirs.entries(), keys[1]).ok
    finally:
        ours.close()
        theirs.close()
    with sqlite3.connect(tmp_path / "bank-ledger.sqlite") as db:
        db.execute("ATTACH DATABASE ? AS other", (str(tmp_path / "other" / "bank-ledger.sqlite"),))
        db.execute("DELETE FROM entries WHERE seq = 5")
        db.execute("INSERT INTO entries SELECT * FROM other.entries WHERE seq = 5")
    book = Ledger(tmp_path / "bank-ledger.sqlite", "bank", keys[0])
    try:
        report = verify_chain(book.entries(), keys[1])
    finally:
        book.close()
    assert not report.ok and report.seq == 5 and "link" in report.problem


# --- Paillier ---------------------------------------------------------------------------------

@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize(("tamper", "rule"), [
    (lambda c, key: 0, "outside \\(0, n\\^2\\)"),
    (lambda c, key: key.nsquare, "outside \\(0, n\\^2\\)"),  # the first value out
    (lambda c, key: key.n, "shares a factor with n"),
])
def test_every_ciphertext_of_a_long_vector_is_validated(paillier_keys, pool, position, tamper,
                                                        rule):
    packing, vector = encrypted(paillier_keys, pool, np.arange(400) - 200)
    count = len(vector.ciphertexts)
    assert count >= 3
    index = {"first": 0, "middle": count // 2, "last": count - 1}[position]
    ciphertexts = list(vector.ciphertexts)
    ciphertexts[index] = tamper(ciphertexts[index], paillier_keys[0])
    bad = cipher.CiphertextVector(paillier_keys[0], packing, vector.count, vector.summed,
                                  tuple(ciphertexts))
    with pytest.raises(ValueError, match=rule):
        cipher.CiphertextVector.from_bytes(bad.to_bytes(), paillier_keys[0], packing)


def test_the_aggregator_sends_a_re_randomised_product(monkeypatch):
    """What reaches the key holder differs in every ciphertext from the plain product of the
    inputs (so it cannot tell how the inputs were combined) and decrypts to the same sum."""
    products, sent = [], []
    add = cipher.add

    def recording_add(vectors):
        product = add(vectors)
        products.append(product)
        return product

    original_send = InProcessChannel._send

    def recording_send(self, to, step, payload, handover):
        if step == SUM_STEP:
            sent.append(bytes(payload))
        return original_send(self, to, step, payload, handover)

    monkeypatch.setattr(cipher, "add", recording_add)
    monkeypatch.setattr(InProcessChannel, "_send", recording_send)
    hub = InProcessHub(["alpha", "beta", "gamma"], timeout_s=60)
    channels = hub.channels(f"paillier-rerandomise-{next(_jobs)}")
    inputs = {p: np.arange(50, dtype=np.int64) * (i + 1) for i, p in enumerate(channels)}
    from test_channel import run_parties

    outputs = run_parties(channels, lambda ch: paillier_sum(
        ch, inputs[ch.party_id], key_holder="gamma", aggregator="alpha", bias=10**6,
        rng=Prg.from_os(), workers=1))
    assert np.array_equal(outputs["gamma"].total, sum(inputs.values()))
    [product], [message] = products, sent
    received = cipher.CiphertextVector.from_bytes(message, product.key, product.packing)
    assert all(a != b for a, b in zip(received.ciphertexts, product.ciphertexts, strict=True))


def test_djn_obfuscators_use_exponents_of_half_the_modulus(monkeypatch):
    public, _ = generate_keypair(Prg.from_os())
    assert public.n.bit_length() >= 2048
    assert public.exponent_bits >= public.n.bit_length() // 2
    bounds = []
    draw = djn.random_below

    def recording(rng, bound):
        bounds.append(bound)
        return draw(rng, bound)

    monkeypatch.setattr(djn, "random_below", recording)
    table = djn.FixedBaseTable(public.hs, public.nsquare, public.exponent_bits)
    djn.make_obfuscators(table, Prg.from_os(), 3)
    assert bounds == [1 << public.exponent_bits] * 3
    assert table.exponent_bytes * 8 >= public.n.bit_length() // 2


# --- no key material in any repr ---------------------------------------------------------------

def encodings(key: bytes) -> list[str]:
    """The ways a key's bytes could show in text."""
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode(),
            base64.urlsafe_b64encode(key).decode().rstrip("="), repr(key)[2:-1],
            str(int.from_bytes(key, "big")), str(int.from_bytes(key, "little")),
            key.hex()[:16], base64.b64encode(key).decode()[:12]]


def test_no_key_material_in_any_repr_in_any_encoding():
    key = bytes(range(1, 33))
    prg = Prg(key)
    _, private = generate_keypair(Prg.from_os())
    primes = (int(private.phe_key.p), int(private.phe_key.q))
    secrets = {"prg": (prg, encodings(key)),
               "paillier": (private, [str(p) for p in primes] + [hex(p)[2:] for p in primes]
                            + [str(primes[0])[:12], hex(primes[1])[2:14]])}
    for name, (holder, forms) in secrets.items():
        for text in (repr(holder), str(holder), f"{holder!r:>10}"):
            for form in forms:
                assert form not in text, f"{name}: {form[:8]}... shows in {text[:60]}"
