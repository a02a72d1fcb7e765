"""A node's inbox is bound to its jobs: attacks by a peer over mTLS, and the mailbox's rules.

On an earlier main, a stale key delivered before a job started was taken in
place of the real one (a total of 19,939,239,945,520.4 instead of
191,682.99, with no error), a party outside a job could abort it, and
messages for jobs that never ran were kept for ever.
"""

from __future__ import annotations

import numpy as np
import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.errors import JobAbortedError, MessageTooLargeError, ProtocolError
from invisible.jobspec import JobSpec
from invisible.net import wire
from invisible.net.mailbox import Mailbox
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets

PARTIES = (*SAMPLE_COLUMNS, "outsider")


@pytest.fixture
def nodes(tmp_path):
    datasets = sample_datasets()
    layout = write_local_federation(tmp_path, list(PARTIES), datasets,
                                    limits={"rpc_timeout_s": 10.0})
    with InProcessNodes(layout) as running, \
            Federation.from_config(layout.coordinator_config) as federation:
        yield running, federation


def spend() -> dict[str, tuple[str, str]]:
    return {p: (SAMPLE_DATASET, "monthly_spend") for p in SAMPLE_COLUMNS}


def test_a_message_delivered_before_the_job_starts_is_refused_not_consumed(nodes):
    running, federation = nodes
    honest = federation.secure_sum(spend(), 100_000.0, max_rows=1000).value
    job_id = "secure_sum-stale-key"
    hospital_to_bank = running.nodes["hospital"].clients["bank"]
    stale_key = bytes(32)  # the job's first message, the X25519 public key, sent early
    with pytest.raises(ProtocolError, match="no job 'secure_sum-stale-key' is prepared"):
        hospital_to_bank.deliver(job_id, "secure-sum/x25519", stale_key)
    with pytest.raises(ProtocolError, match="no job 'secure_sum-stale-key' is prepared"):
        hospital_to_bank.deliver(job_id, "secure-sum/masked-input", np.ones(1, np.uint64))
    assert running.nodes["bank"].mailbox.pending_jobs() == set()  # nothing was kept
    result = federation.secure_sum(spend(), 100_000.0, max_rows=1000, job_id=job_id)
    assert result.value == pytest.approx(honest, abs=1e-6)


def test_a_party_outside_a_job_can_neither_deliver_to_it_nor_abort_it(nodes):
    running, federation = nodes
    outsider_to_bank = running.nodes["outsider"].clients["bank"]
    with pytest.raises(ProtocolError, match="'outsider' may not abort job 'no-such-job'"):
        outsider_to_bank.abort_peer_job("no-such-job")
    bank = running.nodes["bank"]
    channel = bank._open_channel(JobSpec("j-1", "connectivity", tuple(SAMPLE_COLUMNS))
                                 )  # a job of bank, hospital and telco, prepared at bank
    try:
        with pytest.raises(ProtocolError, match="'outsider' is not a party of job 'j-1'"):
            outsider_to_bank.deliver("j-1", "step", b"forged")
        with pytest.raises(ProtocolError, match="'outsider' may not abort job 'j-1'"):
            outsider_to_bank.abort_peer_job("j-1")
        running.nodes["hospital"].clients["bank"].deliver("j-1", "step", b"honest")
        assert channel.recv_bytes("hospital", "step") == b"honest"  # the job is untouched
    finally:
        channel.close()
    assert federation.secure_sum(spend(), 100_000.0, max_rows=1000).value > 0


def test_the_mailbox_bounds_what_a_peer_may_leave_waiting():
    mailbox = Mailbox(max_message_bytes=1000, max_waiting_bytes=2500)
    mailbox.open_job("j", ("a", "b"))
    mailbox.put("j", "s1", "a", np.zeros(100, np.uint64))  # 800 bytes
    mailbox.put("j", "s2", "a", np.zeros(100, np.uint64))
    mailbox.put("j", "s3", "a", np.zeros(100, np.uint64))
    with pytest.raises(MessageTooLargeError, match="party 'a' already has messages waiting"):
        mailbox.put("j", "s4", "a", np.zeros(100, np.uint64))
    mailbox.put("j", "s1", "b", np.zeros(100, np.uint64))  # another peer has its own allowance
    mailbox.get("j", "s1", "a", 1.0)  # taken: its bytes no longer count
    mailbox.put("j", "s4", "a", np.zeros(100, np.uint64))
    mailbox.close_job("j")  # the job's waiting messages go, and their bytes with them
    mailbox.open_job("k", ("a",))
    for step in ("t1", "t2", "t3"):
        mailbox.put("k", step, "a", np.zeros(100, np.uint64))


def test_a_duplicate_wakes_the_waiting_receiver_with_the_reason():
    mailbox = Mailbox()
    mailbox.open_job("j", ("a", "b"))
    mailbox.put("j", "key", "a", b"first")
    with pytest.raises(ProtocolError, match="twice"):
        mailbox.put("j", "key", "a", b"second")
    with pytest.raises(JobAbortedError, match="by 'a': party 'a' sent step 'key' twice"):
        mailbox.get("j", "key", "a", 1.0)
    mailbox.put("j", "other", "b", b"late")  # dropped: the job is over
    assert mailbox.pending_jobs() == set()


def test_a_job_id_is_used_once_for_the_life_of_a_ledger_even_across_restarts(tmp_path):
    layout = write_local_federation(tmp_path, list(SAMPLE_COLUMNS), sample_datasets(),
                                    limits={"rpc_timeout_s": 10.0})
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as federation:
        first = federation.secure_sum(spend(), 100_000.0, max_rows=1000, job_id="once")
    receipt = (tmp_path / "coordinator-receipts" / "once.json").read_text()
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as federation:
        with pytest.raises(ProtocolError, match="job id 'once' was used before on this node"):
            federation.secure_sum(spend(), 100_000.0, max_rows=1000, job_id="once")
    assert (tmp_path / "coordinator-receipts" / "once.json").read_text() == receipt
    assert first.value > 0


class _Recorded:
    """Frames of a delivery, counting how many the receiver pulled."""

    def __init__(self, frames):
        self._frames = iter(frames)
        self.pulled = 0

    def __iter__(self):
        return self

    def __next__(self):
        frame = next(self._frames)
        self.pulled += 1
        return frame


def _servicer(mailbox):
    from invisible.net.server import ExchangeServicer
    return ExchangeServicer(mailbox, lambda: {"a", "b", "outsider"})


@pytest.mark.parametrize(("job", "sender", "step", "why"), [
    ("no-such-job", "a", "s", "no job 'no-such-job' is prepared"),
    ("j", "outsider", "s", "'outsider' is not a party of job 'j'"),
    ("j", "a", "taken", "sent step 'taken' of job 'j' twice"),
])
def test_a_delivery_is_refused_from_its_header_before_its_body_is_read(job, sender, step, why):
    """On an earlier main, the body was read whole into memory before any of these checks."""
    mailbox = Mailbox(max_message_bytes=1 << 30)
    mailbox.open_job("j", ("a", "b"))
    mailbox.put("j", "taken", "a", b"x")
    frames = _Recorded(wire.encode_raw_frames(job, step, np.zeros(1 << 17, np.uint64), 1 << 16))
    with pytest.raises(ProtocolError, match=why):
        _servicer(mailbox)._deliver(sender, frames)
    assert frames.pulled == 1  # the header only


def test_bytes_are_counted_when_a_delivery_is_admitted_not_when_it_has_arrived():
    """Eight concurrent deliveries of 200 MiB each passed a 400 MiB cap: each was checked
    against what had already arrived, unlocked, while all of them were still reading."""
    mailbox = Mailbox(max_message_bytes=1000, max_waiting_bytes=1000)
    mailbox.open_job("j", ("a",))
    admitted = [mailbox.reserve("j", f"s{i}", "a", 200) for i in range(5)]  # none filled yet
    with pytest.raises(MessageTooLargeError, match="already has messages waiting"):
        mailbox.reserve("j", "s5", "a", 200)
    mailbox.cancel(admitted[0])  # its body broke off: the bytes and the step are free again
    mailbox.reserve("j", "s0", "a", 200)
    mailbox.fill(admitted[1], np.zeros(25, np.uint64))
    assert mailbox.get("j", "s1", "a", 1.0).nbytes == 200
    mailbox.reserve("j", "s6", "a", 200)  # taken messages no longer count


def test_a_body_that_differs_from_its_header_is_refused_and_frees_the_step():
    mailbox = Mailbox()
    mailbox.open_job("j", ("a",))
    reservation = mailbox.reserve("j", "s", "a", 16)
    with pytest.raises(ProtocolError, match="does not match the size its header declared"):
        mailbox.fill(reservation, b"short")
    mailbox.put("j", "s", "a", b"0123456789abcdef")  # not a duplicate: the first never arrived
    assert mailbox.get("j", "s", "a", 1.0) == b"0123456789abcdef"


def test_what_a_peer_may_leave_waiting_is_bounded_in_messages_too():
    """200,000 empty messages on distinct steps cost a node 858 MB on an earlier main."""
    mailbox = Mailbox(max_waiting_messages=3)
    mailbox.open_job("j", ("a", "b"))
    for step in ("s1", "s2", "s3"):
        mailbox.put("j", step, "a", b"")
    with pytest.raises(MessageTooLargeError, match="already has 3 messages waiting"):
        mailbox.put("j", "s4", "a", b"")
    mailbox.put("j", "s1", "b", b"")  # another peer has its own allowance
    mailbox.get("j", "s1", "a", 1.0)
    mailbox.put("j", "s4", "a", b"")
    mailbox.close_job("j")
    mailbox.open_job("k", ("a",))
    for step in ("s1", "s2", "s3"):  # a closed job's messages no longer count
        mailbox.put("k", step, "a", b"")


@pytest.mark.parametrize(("job", "step"), [("j" * 129, "s"), ("j", "s" * 129)])
def test_a_header_naming_an_overlong_job_or_step_is_refused(job, step):
    with pytest.raises(ProtocolError, match="longer than 128 characters"):
        wire.check_header(wire.make_header(job, step, b""))


@pytest.mark.parametrize("end", ["close", "abort"])
def test_a_message_for_an_ended_job_is_never_read_and_only_its_parties_may_send_one(end):
    """On an earlier main, any peer's message for a job that had just ended was read whole
    into memory, uncounted: 8 concurrent ones from a non-party held 128 MiB past a 32 MiB cap."""
    mailbox = Mailbox(max_message_bytes=1 << 30)
    mailbox.open_job("j", ("a", "b"))
    mailbox.close_job("j") if end == "close" else mailbox.abort_job("j", "b")
    late = _Recorded(wire.encode_raw_frames("j", "s", np.zeros(1 << 17, np.uint64), 1 << 16))
    _servicer(mailbox)._deliver("a", late)  # acknowledged and dropped
    assert late.pulled == 1  # the header only: the body was never read
    stranger = _Recorded(wire.encode_raw_frames("j", "s", np.zeros(1 << 17, np.uint64), 1 << 16))
    with pytest.raises(ProtocolError, match="'outsider' is not a party of job 'j'"):
        _servicer(mailbox)._deliver("outsider", stranger)
    assert stranger.pulled == 1
