"""A policy may refuse values beyond a job's bound instead of clipping them.

The refusal is one bit, learned alike by every data holder: the job is
refused at each of them, charged, and nobody is told which party held such
a value or on which side of the bound it lay (`invisible.protocols.bound_check`).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import OPEN_POLICY, InProcessNodes, LocalDataset, write_local_federation
from invisible.crypto.prg import Prg
from invisible.errors import ConfigError, PolicyError
from invisible.metering.policy import parse_policy
from invisible.net.inprocess import InProcessHub
from invisible.protocols.bound_check import (
    SHARES_STEP,
    SUMS_STEP,
    any_party_flagged,
    opened_total,
)
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets
from tests.test_refusals import column, sum_spec

PARTIES = tuple(SAMPLE_COLUMNS)
REFUSE = {**OPEN_POLICY, "out_of_bound": "refuse"}


def run_parties(flags: dict[str, bool], protocol=any_party_flagged, channels=None):
    """Every party's answer, each party in its own thread over the in-process channel."""
    parties = tuple(flags)
    channels = channels or InProcessHub(parties, timeout_s=10.0).channels("check")
    with ThreadPoolExecutor(len(parties)) as pool:
        futures = {p: pool.submit(protocol, channels[p], parties, flags[p], Prg.from_os())
                   for p in parties}
        return {p: f.result() for p, f in futures.items()}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=2, max_size=6))
def test_every_party_learns_whether_any_flag_was_set(flags):
    parties = [f"p{i}" for i in range(len(flags))]
    channels = InProcessHub(parties, timeout_s=10.0).channels("check")
    answers = run_parties(dict(zip(parties, flags, strict=True)), channels=channels)
    assert set(answers.values()) == {any(flags)}
    for channel in channels.values():  # two rounds of 8 bytes to every other party
        assert channel.stats.messages_sent == 2 * (len(flags) - 1)
        assert channel.stats.bytes_sent == 16 * (len(flags) - 1)


def test_what_a_party_receives_is_uniformly_random_whatever_the_flags():
    """Every share and partial sum a party receives looks the same with or without flags:
    the low bits of many runs are balanced (a flag's value never shows through)."""
    seen: dict[bool, list[int]] = {True: [], False: []}
    for flagged in (True, False):
        for _ in range(40):
            channels = InProcessHub(("a", "b", "c"), timeout_s=10.0).channels("check")
            real_recv = channels["c"].recv_array

            def recording(sender, step, *args, real=real_recv, out=seen[flagged]):
                value = real(sender, step, *args)
                if step in (SHARES_STEP, SUMS_STEP):
                    out.append(int(value[0]))
                return value

            channels["c"].recv_array = recording
            run_parties({"a": flagged, "b": False, "c": False}, channels=channels)
    for values in seen.values():
        ones = sum(v & 1 for v in values)
        assert 0.3 * len(values) < ones < 0.7 * len(values)
        assert len(set(values)) == len(values)  # never a repeated (e.g. zero) value


def test_the_opened_total_tells_neither_which_nor_how_many_flags():
    """V is 0 without flags, else uniformly random: never the count of flags (1, 2, ...)."""
    for flags in ({"a": False, "b": False, "c": False}, {"a": True, "b": False, "c": False},
                  {"a": True, "b": True, "c": True}):
        totals = []
        for _ in range(20):
            opened = set(run_parties(flags, opened_total).values())
            assert len(opened) == 1  # every party opens the same V
            totals.append(opened.pop())
        if not any(flags.values()):
            assert set(totals) == {0}
        else:
            assert len(set(totals)) == 20 and min(totals) > 2**32  # random, never a count


def test_a_policy_names_clip_or_refuse_and_nothing_else():
    assert parse_policy({"out_of_bound": "refuse"}, "p").out_of_bound == "refuse"
    assert parse_policy({}, "p").out_of_bound == "clip"
    with pytest.raises(ConfigError, match="p.out_of_bound must be one of clip, refuse"):
        parse_policy({"out_of_bound": "ignore"}, "p")


@pytest.fixture
def hospital_refuses(tmp_path):
    datasets = sample_datasets()
    hospital = datasets["hospital"][SAMPLE_DATASET]
    datasets["hospital"][SAMPLE_DATASET] = LocalDataset(hospital.path, hospital.columns, REFUSE)
    layout = write_local_federation(tmp_path, list(PARTIES), datasets, dealers=("dealer",),
                                    limits={"rpc_timeout_s": 20.0})
    with InProcessNodes(layout) as nodes, \
            Federation.from_config(layout.coordinator_config) as federation:
        yield federation, nodes, tmp_path


def spend():
    return {p: (SAMPLE_DATASET, "monthly_spend") for p in PARTIES}


def job_events(nodes, party, job_id):
    return [(e.event, e.body.get("rule"), e.body.get("charged"))
            for e in nodes.nodes[party].ledger.entries() if e.job_id == job_id]


def test_values_beyond_the_bound_refuse_the_job_at_every_party_alike(hospital_refuses):
    federation, nodes, folder = hospital_refuses
    largest = float(column("hospital", "monthly_spend").max())
    with pytest.raises(PolicyError) as refused:
        federation.secure_sum(spend(), largest - 0.01, max_rows=1000, job_id="below")
    message = str(refused.value)
    assert message == ("job 'below' was refused on every party: rule 'out-of-bound': a value "
                       "lies beyond the job's declared bound at one or more parties whose "
                       "policy refuses such values rather than clipping them; no result was "
                       "released")  # neither which party nor which side of the bound
    for party in PARTIES:  # charged everywhere, as a job that ran
        assert job_events(nodes, party, "below") == [
            ("requested", None, None), ("accepted", None, None),
            ("refused", "out-of-bound", True)]
    kept = json.loads((folder / "coordinator-receipts" / "below.json").read_text())
    assert {p: [r["event"] for r in kept[p]] for p in PARTIES} == {p: ["refused"] for p in PARTIES}
    # At the bound itself nothing lies beyond it: the job runs, as with clipping.
    total = federation.secure_sum(spend(), largest, max_rows=1000).value
    expected = sum(np.clip(column(p, "monthly_spend"), -largest, largest).sum() for p in PARTIES)
    assert total == pytest.approx(expected, abs=720 * 2.0**-17)


def test_a_party_that_clips_still_clips_when_another_refuses(hospital_refuses):
    federation, nodes, _ = federation_nodes = hospital_refuses
    hospital_max = float(column("hospital", "monthly_spend").max())
    beyond_elsewhere = [p for p in ("bank", "telco")
                        if column(p, "monthly_spend").max() > hospital_max]
    assert beyond_elsewhere, "the sample data no longer has a larger value outside hospital"
    result = federation.secure_sum(spend(), hospital_max, max_rows=1000)
    clipped = [e for e in nodes.nodes[beyond_elsewhere[0]].ledger.entries()
               if e.job_id == result.job_id and e.event == "clipped"]
    assert clipped and clipped[0].body["values"] >= 1
    del federation_nodes


@pytest.mark.parametrize("kind", ["statistics", "paillier_sum"])
def test_statistics_and_paillier_refuse_alike_too(hospital_refuses, kind):
    federation, nodes, _ = hospital_refuses
    bound = float(column("hospital", "monthly_spend").max()) - 0.01
    alike = "parties 'bank', 'hospital', 'telco' alike" if kind == "statistics" else "every party"
    with pytest.raises(PolicyError, match=f"refused on {alike}: rule 'out-of-bound'"):
        if kind == "statistics":
            federation.statistics(spend(), bound, max_rows=1000, dealer="dealer", job_id=kind,
                                 outputs=("mean",))
        else:
            federation.paillier_sum(spend(), bound, max_rows=1000, key_holder="telco",
                                    job_id=kind, key_bits=2048)
    for party in PARTIES:
        assert job_events(nodes, party, kind)[-1] == ("refused", "out-of-bound", True)
    if kind == "statistics":  # the dealer holds no data: it is told, and fails at once
        (end,) = [e for e in nodes.nodes["dealer"].ledger.entries()
                  if e.job_id == kind and e.event in ("failed", "refused", "finished")]
        assert end.event == "failed" and "aborted by" in end.body["error"]


def test_a_requester_cannot_leave_out_the_check_a_policy_asked_for(hospital_refuses):
    federation, nodes, _ = hospital_refuses
    spec = sum_spec("no-check")
    asked = {p: federation.clients[p].start_job(spec).checks_bounds for p in PARTIES}
    assert asked == {"bank": False, "hospital": True, "telco": False}
    with pytest.raises(PolicyError, match="policy of party 'hospital' refuses values beyond"):
        federation.clients["hospital"].run_job("no-check")  # without check_bounds
    for party in PARTIES:
        federation.clients[party].cancel_job("no-check", "gave up", 5.0)
    assert job_events(nodes, "hospital", "no-check")[-1][0] == "cancelled"
