"""The mailbox's rules for aborts and waiting jobs, without nodes or sockets.

Guards who may abort a job, what the error of an aborted job tells its
receivers (who aborted, and why only when a reason was given), that the
memory of aborted jobs stays bounded and forgets the oldest first, and which
jobs count as having messages waiting.
"""

from __future__ import annotations

import threading
import time

import pytest

from invisible.errors import (
    JobAbortedError,
    MessageTooLargeError,
    PartyUnavailableError,
    ProtocolError,
)
from invisible.net import wire
from invisible.net.mailbox import _REMEMBERED_JOBS, ABORT_STEP, Mailbox, Reservation


def aborted_error(mailbox: Mailbox, job_id: str) -> JobAbortedError:
    with pytest.raises(JobAbortedError) as caught:
        mailbox.get(job_id, "any-step", "a", 1.0)
    return caught.value


def test_only_a_party_of_a_job_prepared_here_may_abort_it():
    mailbox = Mailbox()
    mailbox.open_job("j", ("a", "b"))
    assert mailbox.may_abort("j", "a")
    assert mailbox.may_abort("j", "b")
    assert not mailbox.may_abort("j", "outsider")
    assert not mailbox.may_abort("no-such-job", "a")
    mailbox.close_job("j")
    assert not mailbox.may_abort("j", "a")


def test_an_abort_delivered_by_a_party_wakes_the_job_naming_that_party():
    from invisible.net.server import ExchangeServicer

    mailbox = Mailbox()
    mailbox.open_job("j", ("a", "b"))
    servicer = ExchangeServicer(mailbox, lambda: {"a", "b"})
    servicer._deliver("b", wire.encode_raw_frames("j", ABORT_STEP, b""))
    error = aborted_error(mailbox, "j")
    assert error.by == "b"
    assert str(error) == "job 'j' was aborted by 'b'"


def test_an_abort_without_a_reason_names_who_and_nothing_more():
    mailbox = Mailbox()
    mailbox.open_job("j", ("a", "b"))
    mailbox.abort_job("j", "b")
    error = aborted_error(mailbox, "j")
    assert error.by == "b"
    assert str(error) == "job 'j' was aborted by 'b'"


def test_an_abort_with_a_reason_gives_it_and_a_second_abort_changes_nothing():
    mailbox = Mailbox()
    mailbox.open_job("j", ("a", "b"))
    mailbox.abort_job("j", "a", "its data set is gone")
    mailbox.abort_job("j", "b", "too late")
    error = aborted_error(mailbox, "j")
    assert error.by == "a"
    assert str(error) == "job 'j' was aborted by 'a': its data set is gone"


@pytest.mark.timeout(30)  # forgetting that never shrinks the memory would loop for ever
def test_the_memory_of_aborted_jobs_is_bounded_and_forgets_the_oldest_first():
    mailbox = Mailbox()
    jobs = [f"j{i}" for i in range(_REMEMBERED_JOBS + 2)]
    for job in jobs:
        mailbox.open_job(job, ("a", "b"))
    mailbox.abort_job(jobs[0], "a", "an old reason")
    for job in jobs[1:]:  # the second oldest is aborted without a reason
        mailbox.abort_job(job, "b")
    for remembered in (jobs[2], jobs[-1]):  # still refused: the oldest remembered, the newest
        assert mailbox.reserve(remembered, "s", "a", 1) is None
        assert aborted_error(mailbox, remembered).by == "b"
    assert isinstance(mailbox.reserve(jobs[1], "s", "a", 1), Reservation)  # forgotten
    mailbox.abort_job(jobs[0], "b")  # forgotten too, with its reason: a new abort tells its own
    assert str(aborted_error(mailbox, jobs[0])) == "job 'j0' was aborted by 'b'"


def test_pending_jobs_are_the_jobs_with_a_message_waiting_to_be_taken():
    mailbox = Mailbox()
    mailbox.open_job("j", ("a", "b"))
    mailbox.open_job("k", ("a", "b"))
    assert mailbox.pending_jobs() == set()
    mailbox.put("j", "step", "a", b"x")
    reservation = mailbox.reserve("k", "step", "a", 1)  # admitted, its body not yet arrived
    assert mailbox.pending_jobs() == {"j"}
    assert mailbox.get("j", "step", "a", 1.0) == b"x"
    assert mailbox.pending_jobs() == set()
    assert reservation is not None
    mailbox.fill(reservation, b"y")
    assert mailbox.pending_jobs() == {"k"}


def test_a_job_closed_twice_still_drops_a_late_message_from_its_parties_and_keeps_nothing():
    """A second close forgot the job's parties: a late message from one was refused as from
    a stranger."""
    mailbox = Mailbox()
    mailbox.open_job("j", ("a", "b"))
    mailbox.put("j", "s", "a", b"unread")
    mailbox.close_job("j")
    mailbox.close_job("j")
    assert mailbox.reserve("j", "t", "b", 1) is None  # dropped, its body never read
    with pytest.raises(ProtocolError, match="'outsider' is not a party of job 'j'"):
        mailbox.reserve("j", "t", "outsider", 1)
    assert (mailbox._queues, mailbox._held, mailbox._delivered) == ({}, {}, {})


def test_the_memory_of_closed_jobs_is_bounded_and_forgets_the_oldest_first():
    mailbox = Mailbox()
    jobs = [f"j{i}" for i in range(_REMEMBERED_JOBS + 1)]
    for job in jobs:
        mailbox.open_job(job, ("a", "b"))
        mailbox.close_job(job)
    for remembered in (jobs[1], jobs[-1]):  # the oldest remembered, and the newest
        assert mailbox.reserve(remembered, "s", "a", 1) is None
    with pytest.raises(ProtocolError, match="no job 'j0' is prepared"):
        mailbox.reserve(jobs[0], "s", "a", 1)


def test_the_waiting_caps_hold_exactly_at_the_cap_and_a_message_taken_frees_only_itself():
    """A sender may fill its allowance exactly, no further; taking one of its messages gives
    back that message's bytes and count, and no more (its other messages still count)."""
    mailbox = Mailbox(max_message_bytes=100, max_waiting_bytes=100, max_waiting_messages=2)
    mailbox.open_job("j", ("a",))
    mailbox.put("j", "full", "a", b"x" * 100)  # exactly the byte cap, from nothing waiting
    assert mailbox.get("j", "full", "a", 1.0) == b"x" * 100
    mailbox.put("j", "s1", "a", b"x" * 30)
    mailbox.put("j", "s2", "a", b"x" * 30)  # exactly the message cap
    with pytest.raises(MessageTooLargeError, match=(
            r"^party 'a' already has 2 messages waiting here, the cap$")):
        mailbox.put("j", "s3", "a", b"")
    mailbox.get("j", "s1", "a", 1.0)  # s2 still waits: 30 bytes, 1 message
    with pytest.raises(MessageTooLargeError, match=(
            r"^party 'a' already has messages waiting here; with 71 more bytes they would "
            r"pass the cap of 100 bytes$")):
        mailbox.put("j", "s3", "a", b"x" * 71)
    mailbox.put("j", "s3", "a", b"x" * 70)  # 30 + 70: exactly the cap again
    with pytest.raises(MessageTooLargeError, match="already has 2 messages waiting"):
        mailbox.put("j", "s4", "a", b"")
    mailbox.get("j", "s2", "a", 1.0)
    mailbox.get("j", "s3", "a", 1.0)
    mailbox.put("j", "s5", "a", b"x" * 100)  # all taken: the whole allowance is back
    single = Mailbox(max_waiting_messages=1)  # one message: the first is within it
    single.open_job("j", ("a",))
    single.put("j", "s1", "a", b"")
    with pytest.raises(MessageTooLargeError, match="already has 1 messages waiting"):
        single.put("j", "s2", "a", b"")


def test_one_byte_still_waiting_counts_against_the_cap():
    """A message taken leaves the sender's other bytes counted to the last one."""
    mailbox = Mailbox(max_message_bytes=100, max_waiting_bytes=100, max_waiting_messages=3)
    mailbox.open_job("j", ("a",))
    mailbox.put("j", "one", "a", b"x")
    mailbox.put("j", "big", "a", b"x" * 99)
    mailbox.get("j", "big", "a", 1.0)  # 1 byte still waits
    with pytest.raises(MessageTooLargeError, match="with 100 more bytes they would pass"):
        mailbox.put("j", "more", "a", b"x" * 100)
    mailbox.put("j", "more", "a", b"x" * 99)


def test_a_body_that_differs_from_its_header_is_refused_saying_so_exactly():
    mailbox = Mailbox()
    mailbox.open_job("j", ("a",))
    reservation = mailbox.reserve("j", "s", "a", 16)
    with pytest.raises(ProtocolError, match=(
            r"^a message's body does not match the size its header declared$")):
        mailbox.fill(reservation, b"short")


def test_a_mailbox_takes_any_positive_message_cap_and_allows_two_such_messages_waiting():
    with pytest.raises(ValueError, match="^max_message_bytes must be positive$"):
        Mailbox(max_message_bytes=0)
    assert Mailbox(max_message_bytes=1).max_waiting_bytes == 2
    mailbox = Mailbox(max_message_bytes=1000)
    mailbox.open_job("j", ("a",))
    with pytest.raises(MessageTooLargeError, match=(
            r"^message from party 'a' declares 1001 bytes, over the cap of 1000 bytes$")):
        mailbox.reserve("j", "s0", "a", 1001)
    mailbox.put("j", "s1", "a", b"x" * 1000)
    mailbox.put("j", "s2", "a", b"x" * 1000)  # by default two whole messages may wait
    with pytest.raises(MessageTooLargeError, match="would pass the cap of 2000 bytes"):
        mailbox.put("j", "s3", "a", b"x")


def test_a_message_not_come_names_job_step_and_sender_and_a_taken_one_leaves_nothing():
    mailbox = Mailbox()
    mailbox.open_job("j", ("a",))
    with pytest.raises(PartyUnavailableError, match=(
            r"^party .a. is unavailable: no message for job .j. step .s. within 0.05 s$")) as missing:
        mailbox.get("j", "s", "a", 0.05)
    assert missing.value.party_id == "a"
    mailbox.put("j", "t", "a", b"x")
    assert mailbox.get("j", "t", "a", 1.0) == b"x"
    assert ("j", "t", "a") not in mailbox._queues  # taken: its queue is gone, not kept


def test_an_abort_wakes_every_receiver_waiting_on_the_same_step():
    mailbox = Mailbox()
    mailbox.open_job("j", ("a", "b"))
    outcomes: list[str] = []

    def receive() -> None:
        try:
            mailbox.get("j", "s", "a", 5.0)
            outcomes.append("returned")
        except JobAbortedError:
            outcomes.append("aborted")

    waiting = [threading.Thread(target=receive) for _ in range(2)]
    for thread in waiting:
        thread.start()
    time.sleep(0.1)  # both wait on the step's one queue
    mailbox.abort_job("j", "b")
    for thread in waiting:
        thread.join(timeout=5)
    assert outcomes == ["aborted", "aborted"]
