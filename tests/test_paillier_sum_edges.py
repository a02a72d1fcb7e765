"""The Paillier sum's refusals and edges, each party in a thread, obfuscators made in-process.

Guards what the 3-party test passes over: a job of two parties, roles that
are not the job's parties, the key size asked for, the context the
obfuscation base is bound to, and the refusals of the aggregator and the key
holder, each naming the party and the rule (a vector refused on receipt, a
length other than the job's, a sum of fewer inputs than the job's).
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from invisible.crypto.paillier import vector as cipher
from invisible.crypto.paillier.keys import PublicKey, generate_keypair, obfuscation_base
from invisible.crypto.paillier.packing import Packing
from invisible.crypto.prg import Prg
from invisible.errors import ProtocolError
from invisible.net.inprocess import InProcessHub
from invisible.protocols import paillier_sum as protocol
from tests.test_paillier_checks import InlineObfuscators

_jobs = itertools.count()
BIAS = 10**6


class InlinePool(InlineObfuscators):
    """Stands in for ObfuscatorPool(key, workers): no worker processes."""

    def __init__(self, key: PublicKey, workers: int | None = None) -> None:
        super().__init__(key)

    def __enter__(self) -> InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture(autouse=True)
def inline_obfuscators(monkeypatch):
    monkeypatch.setattr(protocol, "ObfuscatorPool", InlinePool)


def run(parties, body, timeout_s=10.0):
    """body(channel) at every party, each in a thread: its result or the error it raised."""
    channels = InProcessHub(parties, timeout_s=timeout_s).channels(f"job-{next(_jobs)}")
    outcome = {}

    def party(name):
        try:
            outcome[name] = body(channels[name])
        except Exception as exc:  # every party's outcome is checked by the test
            outcome[name] = exc
            channels[name].abort()  # as a node does: the others stop waiting for it

    threads = [threading.Thread(target=party, args=(p,)) for p in parties]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcome


def honest(channel, values=None, **kwargs):
    args = {"key_holder": "gamma", "aggregator": "alpha", "bias": BIAS, "rng": Prg.from_os()}
    args.update(kwargs)
    mine = np.array([1, -2, 3], np.int64) * (1 + channel.parties.index(channel.party_id))
    return protocol.paillier_sum(channel, mine if values is None else values, **args)


def test_two_parties_suffice_the_key_holder_and_the_aggregator():
    outcome = run(("alpha", "gamma"), honest)
    assert outcome["gamma"].total.tolist() == [3, -6, 9]
    assert outcome["alpha"].total is None


@pytest.mark.parametrize(("key_holder", "aggregator"), [("delta", "alpha"), ("gamma", "delta")])
def test_roles_outside_the_job_are_refused(key_holder, aggregator):
    outcome = run(("alpha", "beta", "gamma"), lambda ch: honest(
        ch, key_holder=key_holder, aggregator=aggregator))
    for error in outcome.values():
        assert isinstance(error, ProtocolError)
        assert str(error) == "the key holder and the aggregator must be parties of the job"


def test_the_key_holder_cannot_be_the_aggregator():
    outcome = run(("alpha", "gamma"), lambda ch: honest(ch, aggregator="gamma"))
    for error in outcome.values():
        assert isinstance(error, ProtocolError)
        assert str(error) == "the aggregator must be a party other than the key holder"


def test_the_key_holder_makes_a_key_of_the_size_asked_for():
    received = []
    real = PublicKey.from_bytes

    def recording(data, **kwargs):
        received.append(real(data, **kwargs))
        return received[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol.PublicKey, "from_bytes", recording)
        outcome = run(("alpha", "gamma"), lambda ch: honest(ch, key_bits=2304))
    assert outcome["gamma"].total.tolist() == [3, -6, 9]
    assert [key.bits for key in received] == [2304]


def test_the_obfuscation_base_is_bound_to_the_job_and_key_holder_as_documented():
    """u32 length | job | u32 length | key holder, big-endian: another implementation of a
    party derives the same base from n, and a base for another job or holder is refused."""
    hub = InProcessHub(("alpha", "gamma"))
    channel = hub.channel("alpha", "job-7")
    assert protocol.key_context(channel, "gamma") == b"\0\0\0\x05job-7\0\0\0\x05gamma"
    public, _ = generate_keypair(Prg.from_os(), context=protocol.key_context(channel, "gamma"))
    assert public.hs == obfuscation_base(public.n, b"\0\0\0\x05job-7\0\0\0\x05gamma")
    assert protocol.key_context(channel, "alpha") != protocol.key_context(channel, "gamma")


def test_the_aggregator_names_a_party_whose_ciphertexts_it_refuses():
    def party(channel):
        if channel.party_id == "beta":  # sends a vector under a key of its own
            public = PublicKey.from_bytes(channel.recv_bytes("gamma", protocol.KEY_STEP),
                                          context=protocol.key_context(channel, "gamma"))
            own, _ = generate_keypair(Prg.from_os())
            packing = Packing.plan(public.bits, BIAS, 2)
            forged = cipher.encrypt(own, packing, np.zeros(3, np.int64), InlineObfuscators(own))
            channel.send("alpha", protocol.INPUT_STEP, forged.to_bytes())
            return None
        return honest(channel)

    outcome = run(("alpha", "beta", "gamma"), party)
    assert isinstance(outcome["alpha"], ProtocolError)
    assert str(outcome["alpha"]) == ("party 'beta' sent ciphertexts that are refused: "
                                     "the ciphertexts are under a foreign key")


def test_the_aggregator_refuses_a_vector_of_another_length_than_the_job_s():
    def party(channel):
        values = np.arange(4, dtype=np.int64) if channel.party_id == "beta" else None
        return honest(channel, values)

    outcome = run(("alpha", "beta", "gamma"), party)
    assert isinstance(outcome["alpha"], ProtocolError)
    assert str(outcome["alpha"]) == "party 'beta' sent 4 values, the job has 3"


def test_the_key_holder_refuses_a_sum_of_fewer_inputs_than_the_job_s():
    def party(channel):
        if channel.party_id == "alpha":  # forwards its own input alone, re-randomised
            public = PublicKey.from_bytes(channel.recv_bytes("gamma", protocol.KEY_STEP),
                                          context=protocol.key_context(channel, "gamma"))
            pool = InlineObfuscators(public)
            mine = cipher.encrypt(public, Packing.plan(public.bits, BIAS, 2),
                                  np.zeros(3, np.int64), pool)
            channel.send("gamma", protocol.SUM_STEP, cipher.rerandomise(mine, pool).to_bytes())
            return None
        return honest(channel)

    outcome = run(("alpha", "beta", "gamma"), party)
    assert isinstance(outcome["gamma"], ProtocolError)
    assert str(outcome["gamma"]) == "party 'alpha' sent a sum of 1 inputs, the job has 2"
