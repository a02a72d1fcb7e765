"""One test body per behaviour, run over the in-process channel and over gRPC with mTLS."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from invisible.errors import (
    JobAbortedError,
    MessageTooLargeError,
    PartyUnavailableError,
    ProtocolError,
)
from invisible.protocols.connectivity import run_connectivity_check
from invisible.protocols.seeds import agree_pairwise_secrets

_job_numbers = itertools.count()


def new_job(transport):
    return transport.channels(f"job-{transport.name}-{next(_job_numbers)}")


def run_parties(channels, body):
    """Run body(channel) for every party in its own thread; return results by party."""
    results, errors = {}, {}

    def target(party):
        try:
            results[party] = body(channels[party])
        except Exception as exc:  # collected and re-raised below
            errors[party] = exc

    threads = [threading.Thread(target=target, args=(p,)) for p in channels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise next(iter(errors.values()))
    return results


@pytest.mark.parametrize(
    "dtype", ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
              "uint64", "float32", "float64"],
)
def test_arrays_of_every_dtype_round_trip(transport, dtype):
    channels = new_job(transport)
    source = np.arange(-7, 17).reshape(4, 6).astype(dtype)
    channels["alpha"].send("beta", "x", source)
    received = channels["beta"].recv_array("alpha", "x", dtype=dtype, shape=(4, 6))
    assert received.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(received, source)


@pytest.mark.parametrize("count", [1, 1000, 131_073, 6_553_600])  # 8 B .. 50 MiB of uint64
def test_sizes_from_one_element_to_fifty_megabytes(transport, count):
    channels = new_job(transport)
    source = np.arange(count, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    channels["gamma"].send("alpha", "big", source)
    received = channels["alpha"].recv_array("gamma", "big", dtype=np.uint64, shape=(count,))
    assert np.array_equal(received, source)
    assert channels["gamma"].stats.bytes_sent == source.nbytes
    assert channels["alpha"].stats.bytes_received == source.nbytes


def test_a_sent_array_never_changes_after_send(transport):
    channels = new_job(transport)
    source = np.arange(10, dtype=np.uint64)
    channels["alpha"].send("beta", "v", source)
    source[:] = 0  # the sender reuses its buffer; what was delivered stays as sent
    np.testing.assert_array_equal(channels["beta"].recv_array("alpha", "v"), np.arange(10))


def test_a_handed_over_array_arrives_intact_at_every_peer(transport):
    channels = new_job(transport)
    source = np.arange(1000, dtype=np.uint64) * np.uint64(3)
    channels["alpha"].send_to_each("h", {"beta": source, "gamma": source}, handover=True)
    for peer in ("beta", "gamma"):
        received = channels[peer].recv_array("alpha", "h", np.uint64, (1000,))
        np.testing.assert_array_equal(received, np.arange(1000) * 3)
        if transport.name == "inprocess":  # no copy: shared, so nobody may write to it
            assert not received.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                received[0] = 1


def test_bytes_and_empty_messages_round_trip(transport):
    channels = new_job(transport)
    channels["alpha"].send("beta", "b", b"\x00\xffpayload")
    channels["alpha"].send("beta", "e", b"")
    channels["alpha"].send("beta", "z", np.zeros((0, 3), dtype=np.float64))
    assert channels["beta"].recv_bytes("alpha", "b") == b"\x00\xffpayload"
    assert channels["beta"].recv_bytes("alpha", "e") == b""
    assert channels["beta"].recv_array("alpha", "z").shape == (0, 3)


def test_non_contiguous_and_big_endian_arrays_arrive_as_values(transport):
    channels = new_job(transport)
    source = np.arange(30, dtype=">i4").reshape(5, 6)[:, ::2]
    channels["alpha"].send("beta", "v", source)
    received = channels["beta"].recv_array("alpha", "v")
    np.testing.assert_array_equal(received, source)


def test_each_step_carries_one_message_per_sender(transport):
    channels = new_job(transport)
    for i in range(20):
        channels["alpha"].send("gamma", f"seq/{i}", np.array([i], dtype=np.int64))
        channels["beta"].send("gamma", f"seq/{i}", np.array([100 + i], dtype=np.int64))
    from_alpha = [int(channels["gamma"].recv_array("alpha", f"seq/{i}")[0]) for i in range(20)]
    from_beta = [int(channels["gamma"].recv_array("beta", f"seq/{i}")[0]) for i in range(20)]
    assert from_alpha == list(range(20))
    assert from_beta == list(range(100, 120))


def test_a_second_message_on_a_step_aborts_the_job_and_is_never_preferred(transport):
    channels = new_job(transport)
    channels["alpha"].send("gamma", "key", np.array([1], dtype=np.int64))  # the first
    with pytest.raises(ProtocolError, match="sent step 'key' .* twice; the job is aborted"):
        channels["alpha"].send("gamma", "key", np.array([2], dtype=np.int64))
    with pytest.raises(JobAbortedError, match="aborted by 'alpha': party 'alpha' sent step "
                                              "'key' twice"):
        channels["gamma"].recv_array("alpha", "key")


def test_concurrent_jobs_on_one_node_do_not_mix(transport):
    jobs = [new_job(transport) for _ in range(6)]

    def exchange(index):
        channels = jobs[index]
        for step in range(5):
            channels["alpha"].send("beta", f"s{step}", np.full(1000, index * 10 + step,
                                                               np.int64))

    threads = [threading.Thread(target=exchange, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for index, channels in enumerate(jobs):
        for step in range(5):
            received = channels["beta"].recv_array("alpha", f"s{step}")
            assert np.all(received == index * 10 + step)


def test_unknown_peer_is_refused(transport):
    channels = new_job(transport)
    with pytest.raises(ProtocolError, match="unknown peer 'delta'"):
        channels["alpha"].send("delta", "x", b"hi")
    with pytest.raises(ProtocolError, match="unknown peer 'delta'"):
        channels["alpha"].recv("delta", "x")


def test_wrong_payload_type_dtype_or_shape_is_refused(transport):
    channels = new_job(transport)
    with pytest.raises(ProtocolError, match="cannot be sent"):
        channels["alpha"].send("beta", "x", np.array(["text"], dtype=object))
    channels["alpha"].send("beta", "x", np.zeros(3, np.int32))
    with pytest.raises(ProtocolError, match="expected uint64"):
        channels["beta"].recv_array("alpha", "x", dtype=np.uint64)
    channels["alpha"].send("beta", "y", b"abc")
    with pytest.raises(ProtocolError, match="expects an array"):
        channels["beta"].recv_array("alpha", "y")


def test_message_over_the_cap_is_refused_and_nothing_is_delivered(make_transport):
    transport = make_transport(max_message_bytes=1 << 20)
    channels = new_job(transport)
    with pytest.raises(MessageTooLargeError, match="over the cap"):
        channels["alpha"].send("beta", "big", np.zeros((1 << 17) + 1, np.uint64))
    channels["alpha"].send("beta", "big", np.ones(1 << 17, np.uint64))  # exactly the cap
    assert channels["beta"].recv_array("alpha", "big").sum() == 1 << 17


def test_missing_message_fails_within_the_deadline_naming_the_party(make_transport):
    transport = make_transport(timeout_s=0.5)
    channels = new_job(transport)
    started = time.monotonic()
    with pytest.raises(PartyUnavailableError, match="party 'gamma'"):
        channels["alpha"].recv("gamma", "never-sent")
    assert time.monotonic() - started < 5


def test_pairwise_secrets_agree_and_differ_between_pairs_and_steps(transport):
    channels = new_job(transport)
    secrets = run_parties(channels, agree_pairwise_secrets)
    for a, b in itertools.combinations(channels, 2):
        assert secrets[a].seed(b, "mask") == secrets[b].seed(a, "mask")
        assert secrets[a].seed(b, "mask") != secrets[a].seed(b, "other-step")
    assert secrets["alpha"].seed("beta", "mask") != secrets["alpha"].seed("gamma", "mask")
    with pytest.raises(ProtocolError, match="already used"):
        secrets["alpha"].prgs("s")
        secrets["alpha"].prgs("s")


def test_pairwise_secrets_are_fresh_for_every_job(transport):
    first = run_parties(new_job(transport), agree_pairwise_secrets)
    second = run_parties(new_job(transport), agree_pairwise_secrets)
    assert first["alpha"].seed("beta", "s") != second["alpha"].seed("beta", "s")


def test_connectivity_check_confirms_every_peer(transport):
    results = run_parties(new_job(transport), run_connectivity_check)
    assert {p: set(r.peers_confirmed) for p, r in results.items()} == {
        "alpha": {"beta", "gamma"}, "beta": {"alpha", "gamma"}, "gamma": {"alpha", "beta"},
    }


def test_connectivity_check_detects_a_wrong_confirmation(transport):
    channels = new_job(transport)
    # beta answers with garbage instead of running the protocol.
    def impostor(channel):
        for peer in channel.peers:
            channel.send(peer, "connectivity/x25519", bytes(range(1, 33)))
        for peer in channel.peers:
            channel.recv(peer, "connectivity/x25519")
            channel.send(peer, "confirm", bytes(32))
        return None

    bodies = {"alpha": run_connectivity_check, "beta": impostor,
              "gamma": run_connectivity_check}
    with pytest.raises(ProtocolError, match="key confirmation with party 'beta' failed"):
        run_parties(channels, lambda ch: bodies[ch.party_id](ch))


def test_zero_dimensional_arrays_keep_their_shape(transport):
    channels = new_job(transport)
    channels["alpha"].send("beta", "scalar", np.array(7, dtype=np.uint64))
    received = channels["beta"].recv_array("alpha", "scalar", np.uint64, ())
    assert received.shape == () and int(received) == 7
