"""A node stays available: stalled deliveries and long-polls cannot take all its workers.

On an earlier main, 40 stalled Deliver streams from one peer, or 40 Status
long-polls from any coordinator identity, filled the node's 32 worker
threads: Health and Start timed out and `invisible health` showed the node
DOWN.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.errors import PartyUnavailableError
from invisible.jobspec import JobSpec
from invisible.net import wire
from invisible.net.server import DELIVERIES_PER_PEER, Slots

STALLS = 40


def stalled_frames(release: threading.Event, step: str = "s", job_id: str = "j"):
    """A delivery that sends its header and one chunk, then stalls until released."""
    frames = iter(wire.encode_raw_frames(job_id, step, np.zeros(1 << 18, np.uint64), 1 << 20))
    yield next(frames)
    yield next(frames)
    release.wait(30)


@pytest.mark.timeout(120)
def test_stalled_deliveries_from_a_peer_leave_the_node_serving(tmp_path):
    layout = write_local_federation(tmp_path, ["a", "b"], limits={"rpc_timeout_s": 3.0})
    release = threading.Event()
    calls = []
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        b_to_a = nodes.nodes["b"].clients["a"]
        channel = nodes.nodes["a"]._open_channel(JobSpec("j", "connectivity", ("a", "b")))
        try:  # b is a party of job j, prepared at a: each stalled step is admitted
            for i in range(STALLS):
                calls.append(b_to_a._deliver.future(stalled_frames(release, f"s{i}"), timeout=60))
            time.sleep(0.5)
            started = time.monotonic()
            assert fed.health(timeout_s=5)["a"].serving
            assert fed.connectivity().ok  # job control and the job's own messages still go
            assert time.monotonic() - started < 10
            busy = [c for c in calls if c.done() and c.exception() is not None
                    and "this node is busy" in (c.exception().details() or "")]
            assert len(busy) >= STALLS - DELIVERIES_PER_PEER  # over the cap: refused at once
        finally:
            release.set()
            channel.close()
        # the stalled ones are cancelled at the node's RPC deadline (3 s), not held for ever
        deadline = time.monotonic() + 10
        while not all(c.done() for c in calls) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(c.done() for c in calls)


@pytest.mark.timeout(120)
def test_long_polls_from_one_coordinator_cannot_starve_the_others(tmp_path):
    layout = write_local_federation(tmp_path, ["a", "b"], coordinators=("greedy", "analyst"))
    with InProcessNodes(layout), \
            Federation.from_config(layout.coordinator_configs["greedy"]) as greedy, \
            Federation.from_config(layout.coordinator_configs["analyst"]) as analyst:
        job = greedy.connectivity().job_id
        client = greedy.clients["a"]
        polls = [threading.Thread(target=client.job_status, args=(job,),
                                  kwargs={"wait_s": 20.0}, daemon=True) for _ in range(STALLS)]
        for poll in polls:
            poll.start()
        started = time.monotonic()
        assert analyst.health(timeout_s=5)["a"].serving
        assert analyst.connectivity().ok
        assert time.monotonic() - started < 10
        for poll in polls:
            poll.join(30)  # over the cap they were answered at once, not after 20 s
        assert time.monotonic() - started < 25


def test_slots_cap_each_identity_and_all():
    slots = Slots(in_all=3, per_identity=2)
    with slots.hold("a") as one, slots.hold("a") as two, slots.hold("a") as three:
        assert (one, two, three) == (True, True, False)
        with slots.hold("b") as four, slots.hold("c") as five:
            assert (four, five) == (True, False)
    with slots.hold("a") as again:
        assert again  # given back on exit


def test_busy_is_retried_by_the_sender_until_its_deadline():
    from invisible.net.errors_grpc import is_transient_failure

    class Busy(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "this node is busy: party 'b' has 8 deliveries under way"

    assert is_transient_failure(Busy())
    assert issubclass(PartyUnavailableError, Exception)
