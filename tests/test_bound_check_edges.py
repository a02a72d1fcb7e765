"""The bound check's edges: its party list, its step names and tags, malformed peer messages.

`tests/test_bound_check.py` shows what every party learns; this file guards
what the protocol refuses (a party list with a duplicate or without this
party, a share or partial sum of the wrong type or shape, naming the step)
and that each run keeps to its own steps (the documented names plus its
tag), so that two checks in one job cannot be confused with each other.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ProtocolError
from invisible.net.inprocess import InProcessHub
from invisible.protocols.bound_check import SHARES_STEP, SUMS_STEP, any_party_flagged, opened_total


def channels(parties=("a", "b", "c"), timeout_s=5.0):
    return InProcessHub(parties, timeout_s=timeout_s).channels("check")


@pytest.mark.parametrize("parties", [("a", "b", "b"), ("a", "a", "b"), ("b", "c")])
def test_a_party_list_with_a_duplicate_or_without_this_party_is_refused(parties):
    with pytest.raises(ProtocolError,
                       match="^the bound check needs distinct parties, this one among them$"):
        opened_total(channels(timeout_s=0.5)["a"], parties, False, Prg.from_os())


def test_each_run_keeps_to_the_documented_steps_suffixed_by_its_tag():
    """Steps `bound-check/shares` and `bound-check/sums`, plus the run's tag (none by default)."""
    both = channels(("a", "b"))
    steps: list[str] = []
    real_send = both["a"].send_to_each

    def recording(step, payloads, **kwargs):
        steps.append(step)
        return real_send(step, payloads, **kwargs)

    both["a"].send_to_each = recording  # type: ignore[method-assign]
    for tag in ("", "/again"):
        with ThreadPoolExecutor(2) as pool:
            if tag:
                runs = [pool.submit(any_party_flagged, both[p], ("a", "b"), False, Prg.from_os(),
                                    tag) for p in ("a", "b")]
            else:
                runs = [pool.submit(opened_total, both[p], ("a", "b"), False, Prg.from_os())
                        for p in ("a", "b")]
            assert [r.result() for r in runs] in ([0, 0], [False, False])
    assert steps == ["bound-check/shares", "bound-check/sums",
                     "bound-check/shares/again", "bound-check/sums/again"]
    assert (SHARES_STEP, SUMS_STEP) == ("bound-check/shares", "bound-check/sums")


def malformed(step, payload):
    """a's channel, b having sent its messages for a two-party check, one of them `payload`."""
    both = channels(("a", "b"))
    zero = np.zeros(1, dtype=RING_DTYPE)
    both["b"].send("a", SHARES_STEP, payload if step == SHARES_STEP else zero)
    both["b"].send("a", SUMS_STEP, payload if step == SUMS_STEP else zero)
    return both["a"]


@pytest.mark.parametrize("step", [SHARES_STEP, SUMS_STEP])
@pytest.mark.parametrize(("payload", "rule"), [
    (np.zeros(1, dtype=np.int64), "sent dtype int64 at step '{step}', expected uint64"),
    (np.zeros(1, dtype=np.float64), "sent dtype float64 at step '{step}', expected uint64"),
    (np.zeros(2, dtype=RING_DTYPE), r"sent shape \(2,\) at step '{step}', expected \(1,\)"),
    (np.zeros((1, 1), dtype=RING_DTYPE), r"sent shape \(1, 1\) at step '{step}', expected"),
])
def test_a_share_or_partial_sum_of_the_wrong_type_or_shape_is_refused(step, payload, rule):
    receiver = malformed(step, payload)
    with pytest.raises(ProtocolError, match="party 'b' " + rule.format(step=step)):
        opened_total(receiver, ("a", "b"), False, Prg.from_os())

