"""Secure sum: fixed-point math (Hypothesis), the protocol on both transports, the coordinator."""

from __future__ import annotations

import gzip
import itertools
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_channel import run_parties

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, LocalDataset, write_local_federation
from invisible.crypto.fixedpoint import BoundError, check_sum_capacity, decode, encode
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ConfigError, PartyUnavailableError, PolicyError, ProtocolError
from invisible.kinds.secure_sum import RELEASED_ARRAY, SecureSumKind
from invisible.net.jobs_api import status_to_proto
from invisible.net.pki import Identity, Role
from invisible.protocols.secure_sum import masked_input, secure_sum

DATA = Path(__file__).resolve().parent / "data"
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
_jobs = itertools.count()


# --- fixed point -------------------------------------------------------------------------------

@given(hnp.arrays(np.float64, st.integers(0, 50), elements=finite), st.integers(0, 24))
@settings(max_examples=100, deadline=None)
def test_encoding_error_is_at_most_half_an_ulp(values, fractional_bits):
    decoded = decode(encode(values, 1e6, fractional_bits), fractional_bits)
    assert np.all(np.abs(decoded - values) <= 2.0 ** -(fractional_bits + 1) + 1e-9)


@given(hnp.arrays(np.float64, st.integers(1, 40), elements=finite),
       hnp.arrays(np.float64, st.integers(1, 40), elements=finite))
@settings(max_examples=60, deadline=None)
def test_ring_addition_of_encodings_is_the_encoding_of_the_sum(a, b):
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    summed = decode(encode(a, 1e6) + encode(b, 1e6))
    assert np.all(np.abs(summed - (a + b)) <= 2.0 ** -16 + 1e-9)


@given(st.floats(1.0, 1e12), st.integers(1, 10**7), st.integers(0, 30))
@settings(max_examples=100, deadline=None)
def test_capacity_check_refuses_exactly_the_sums_that_could_wrap(bound, terms, bits):
    worst = terms * bound * 2.0**bits
    if worst < 2**63:
        check_sum_capacity(bound, terms, bits)
    else:
        with pytest.raises(BoundError, match="2\\^63"):
            check_sum_capacity(bound, terms, bits)


def test_values_outside_the_bound_are_refused_never_wrapped():
    with pytest.raises(BoundError, match="1 value\\(s\\) are not finite or exceed"):
        encode(np.array([1.0, 10.5, -3.0]), bound=10.0)
    with pytest.raises(BoundError, match="2 value"):
        encode(np.array([np.nan, np.inf]), bound=10.0)
    assert decode(encode(np.array([-10.0, 10.0]), bound=10.0)).tolist() == [-10.0, 10.0]


# --- the protocol over both transports --------------------------------------------------------

def new_job(transport):
    return transport.channels(f"sum-{transport.name}-{next(_jobs)}")


@pytest.mark.parametrize("recipient", [None, "beta"])
def test_three_party_secure_sum_equals_the_plaintext_sum(transport, recipient):
    rng = np.random.default_rng(7)  # test data only; the protocol draws its masks from a Prg
    inputs = {p: rng.uniform(-1000, 1000, 257) for p in ("alpha", "beta", "gamma")}
    encoded = {p: encode(v, 1000.0) for p, v in inputs.items()}
    outputs = run_parties(new_job(transport),
                          lambda ch: secure_sum(ch, encoded[ch.party_id], recipient))
    if recipient is None:
        total = np.sum([o.released for o in outputs.values()], axis=0, dtype=RING_DTYPE)
        assert all(o.total is None for o in outputs.values())
    else:
        total = outputs[recipient].total
        assert outputs[recipient].values_opened == 257
        assert outputs["alpha"].total is None and outputs["alpha"].released is None
    assert np.array_equal(total, np.sum(list(encoded.values()), axis=0, dtype=RING_DTYPE))
    assert np.allclose(decode(total), sum(inputs.values()), atol=3 * 2.0**-17)


def test_masked_inputs_hide_the_input_and_differ_between_runs(transport):
    zeros = np.zeros(4096, dtype=RING_DTYPE)
    first = run_parties(new_job(transport), lambda ch: masked_input(ch, zeros))
    second = run_parties(new_job(transport), lambda ch: masked_input(ch, zeros))
    for party in first:
        bits = np.unpackbits(first[party].view(np.uint8))
        assert abs(bits.mean() - 0.5) < 0.01  # a masked zero vector looks uniform
        assert not np.any(first[party] == second[party])  # fresh masks per job
    assert np.array_equal(np.sum(list(first.values()), axis=0, dtype=RING_DTYPE), zeros)


def test_a_wrong_input_type_is_refused(transport):
    with pytest.raises(ProtocolError, match="1-D uint64"):
        masked_input(new_job(transport)["alpha"], np.zeros(3, np.int64))


# --- the coordinator and nodes ----------------------------------------------------------------

def credit_column(party: str, tmp: Path) -> LocalDataset:
    """The default-credit horizontal split (FATE examples), shipped gzipped in tests/data."""
    source = DATA / f"default_credit_homo_{party}.csv.gz"
    target = tmp / f"{party}.csv"
    target.write_bytes(gzip.decompress(source.read_bytes()))
    return LocalDataset(target, {"x0": "float", "x1": "float", "y": "int"})


CREDIT_PARTIES = {"guest": "guest", "host-1": "host_1", "host-2": "host_2"}


@pytest.fixture(scope="module")
def credit_federation(tmp_path_factory):
    folder = tmp_path_factory.mktemp("credit")
    datasets = {p: {"credit": credit_column(f, folder)} for p, f in CREDIT_PARTIES.items()}
    layout = write_local_federation(folder / "federation", list(CREDIT_PARTIES), datasets,
                                    limits={"rpc_timeout_s": 5.0})
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        yield fed, nodes, datasets


ROUNDING = 24_000 * 2.0**-17  # rows x half an ulp: x0 has few distinct values, so errors add up


def plaintext(datasets, column, group=None):
    """The float64 total, or per-group totals, straight from the files."""
    import csv

    totals = np.zeros(2)
    for entry in datasets.values():
        with entry["credit"].path.open() as handle:
            for row in csv.DictReader(handle):
                totals[int(row[group]) if group else 0] += float(row[column])
    return totals if group else float(totals[0])


def encoded_total(datasets, column):
    """The exact ring total of the fixed-point encodings: what the protocol must hit to the bit."""
    import csv

    parts = []
    for entry in datasets.values():
        with entry["credit"].path.open() as handle:
            values = np.array([float(row[column]) for row in csv.DictReader(handle)])
        parts.append(encode(values, 100.0).sum(dtype=RING_DTYPE, keepdims=True))
    return decode(np.sum(parts, axis=0, dtype=RING_DTYPE))[0]


@pytest.mark.parametrize("column", ["x0", "x1"])
def test_federation_secure_sum_matches_numpy_on_public_data(credit_federation, column):
    fed, _, datasets = credit_federation
    inputs = {p: ("credit", column) for p in CREDIT_PARTIES}
    result = fed.secure_sum(inputs, bound=100.0)
    assert result.value == encoded_total(datasets, column)
    assert result.value == pytest.approx(plaintext(datasets, column), abs=ROUNDING)
    assert {p: r.rows_used for p, r in result.records.items()} == {p: 8000 for p in CREDIT_PARTIES}
    assert all(r.bytes_released == 8 for r in result.records.values())


def test_per_category_totals(credit_federation):
    fed, _, datasets = credit_federation
    inputs = {p: ("credit", "x0") for p in CREDIT_PARTIES}
    result = fed.secure_sum(inputs, bound=100.0, group_by="y", categories=2)
    assert result.total is not None and result.total.shape == (2,)
    assert result.total == pytest.approx(plaintext(datasets, "x0", group="y"), abs=ROUNDING)


def test_a_party_recipient_keeps_the_total_and_the_requester_gets_nothing(credit_federation):
    fed, nodes, datasets = credit_federation
    inputs = {p: ("credit", "x0") for p in CREDIT_PARTIES}
    result = fed.secure_sum(inputs, bound=100.0, recipient="host-1")
    assert result.total is None and result.recipient == "host-1"
    import json

    written = json.loads((nodes.nodes["host-1"].config.results_dir
                          / f"{result.job_id}.json").read_text())
    assert written["total"][0] == encoded_total(datasets, "x0")
    assert result.records["host-1"].values_opened == 1
    assert all(r.bytes_released == 0 for r in result.records.values())


def test_bad_requests_are_refused_before_any_node_runs(credit_federation):
    fed, _, _ = credit_federation
    inputs = {p: ("credit", "x0") for p in CREDIT_PARTIES}
    with pytest.raises(ConfigError, match="could reach .* >= 2\\^63"):
        fed.secure_sum(inputs, bound=1e12, max_rows=10**6)
    with pytest.raises(ConfigError, match="no column 'nope'"):
        fed.secure_sum({**inputs, "guest": ("credit", "nope")}, bound=100.0)
    with pytest.raises(PolicyError, match="rule 'no-policy': dataset 'missing' has no policy"):
        fed.secure_sum({**inputs, "host-2": ("missing", "x0")}, bound=100.0)
    with pytest.raises(ConfigError, match="recipient 'bank' is not a party"):
        fed.secure_sum(inputs, bound=100.0, recipient="bank")


@pytest.mark.parametrize("breaker", ["guest", "host-2"])
def test_a_party_that_fails_while_running_fails_the_job_and_nothing_is_released(
        credit_federation, breaker):
    fed, nodes, _ = credit_federation

    class FailsWhileRunning(SecureSumKind):
        def run(self, params, context):
            raise PolicyError("secure_sum: this party gave up")

    executor = nodes.nodes[breaker].executor
    honest = executor._admission._kinds
    executor._admission._kinds = {**honest, "secure_sum": FailsWhileRunning()}
    inputs = {p: ("credit", "y") for p in CREDIT_PARTIES}
    started = time.monotonic()
    try:
        with pytest.raises(ProtocolError, match=f"job '(.+)' failed on party '{breaker}'.*gave "
                           "up.*no result was released") as raised:
            fed.secure_sum(inputs, bound=1.0)
    finally:
        executor._admission._kinds = honest
    assert time.monotonic() - started < 5  # peers were told at once, not at their deadline
    # Each node's status says why it failed: the breaker on its own account, the others
    # because a peer aborted the job (what the coordinator reads, never error texts). A node
    # aborted relays the abort to the peers it did not come from, so a peer may hear it
    # first from the relay: each names its authenticated sender, never itself, and the first
    # to hear of it heard it from the breaker (under load a relay once won the race).
    job_id = re.search(r"job '([^']+)' failed", str(raised.value)).group(1)
    requester = Identity("coordinator", Role.COORDINATOR)
    aborted_by = {p: nodes.nodes[p].executor.job_status(job_id, requester, 5).aborted_by
                  for p in CREDIT_PARTIES}
    others = [p for p in CREDIT_PARTIES if p != breaker]
    assert aborted_by[breaker] == ""
    assert all(aborted_by[p] in CREDIT_PARTIES and aborted_by[p] != p for p in others)
    assert breaker in [aborted_by[p] for p in others]


def test_a_party_that_is_down_fails_the_job_within_the_deadline_naming_it(tmp_path):
    datasets = {p: {"credit": credit_column(f, tmp_path)} for p, f in CREDIT_PARTIES.items()}
    layout = write_local_federation(tmp_path / "f", list(CREDIT_PARTIES), datasets,
                                    limits={"rpc_timeout_s": 2.0, "job_timeout_s": 10.0})
    nodes = InProcessNodes(layout).__enter__()
    nodes.nodes["host-2"].stop(grace_s=0)
    try:
        with Federation.from_config(layout.coordinator_config) as fed:
            started = time.monotonic()
            with pytest.raises(PartyUnavailableError, match="party 'host-2'"):
                fed.secure_sum({p: ("credit", "x0") for p in CREDIT_PARTIES}, bound=100.0)
            assert time.monotonic() - started < 8
            # The parties that had accepted were cancelled: nothing is left running, even
            # those that were still retrying a delivery to the dead party.
            time.sleep(0.3)
            assert all(not n.executor.running() for n in nodes.nodes.values())
    finally:
        nodes.__exit__(None, None, None)


def test_released_outputs_are_dropped_after_the_retention_time(tmp_path):
    datasets = {p: {"credit": credit_column(f, tmp_path)} for p, f in CREDIT_PARTIES.items()}
    layout = write_local_federation(tmp_path / "f", list(CREDIT_PARTIES), datasets,
                                    limits={"rpc_timeout_s": 5.0, "output_retention_s": 0.3})
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        result = fed.secure_sum({p: ("credit", "x0") for p in CREDIT_PARTIES}, bound=100.0)
        assert result.total is not None  # fetched within the retention time
        executor = nodes.nodes["guest"].executor
        requester = Identity("coordinator", Role.COORDINATOR)
        assert executor.job_output(result.job_id, RELEASED_ARRAY, requester).size == 1
        time.sleep(0.4)
        assert executor.drop_expired_outputs() == 1
        assert executor.drop_expired_outputs() == 0
        with pytest.raises(ConfigError, match="dropped 0.3 s after it finished"):
            executor.job_output(result.job_id, RELEASED_ARRAY, requester)
        status = status_to_proto(executor.job_status(result.job_id, requester, 0))
        assert [h.step for h in status.output_arrays] == [RELEASED_ARRAY]  # still named


# --- the same sums by Paillier, through the nodes -------------------------------------------------

def test_paillier_sum_matches_the_secret_shared_sum_to_the_bit(credit_federation):
    fed, _, datasets = credit_federation
    inputs = {p: ("credit", "x0") for p in CREDIT_PARTIES}
    by_paillier = fed.paillier_sum(inputs, bound=100.0, key_holder="host-1")
    assert by_paillier.value == encoded_total(datasets, "x0")
    grouped = fed.paillier_sum(inputs, bound=100.0, key_holder="guest", aggregator="host-2",
                               group_by="y", categories=2)
    assert grouped.total == pytest.approx(plaintext(datasets, "x0", group="y"), abs=ROUNDING)
    records = grouped.records
    assert records["guest"].values_opened == 2 and records["host-1"].values_opened == 0
    assert records["host-2"].bytes_received > 0  # the aggregator received host-1's ciphertexts


def test_paillier_sum_bad_requests_are_refused(credit_federation):
    fed, _, _ = credit_federation
    inputs = {p: ("credit", "x0") for p in CREDIT_PARTIES}
    with pytest.raises(ConfigError, match="'key_holder' must name a party"):
        fed.paillier_sum(inputs, bound=100.0, key_holder="bank")
    with pytest.raises(ConfigError, match="'aggregator' must be a party other than the key"):
        fed.paillier_sum(inputs, bound=100.0, key_holder="guest", aggregator="guest")
    with pytest.raises(ConfigError, match="could reach .* >= 2\\^63"):
        fed.paillier_sum(inputs, bound=1e9, key_holder="guest", max_rows=10**6)


# --- statistics on shares, with a dealer node -----------------------------------------------------

@pytest.fixture(scope="module")
def credit_with_dealer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("credit-dealer")
    datasets = {p: {"credit": credit_column(f, folder)} for p, f in CREDIT_PARTIES.items()}
    layout = write_local_federation(folder / "federation", list(CREDIT_PARTIES), datasets,
                                    dealers=["dealer"], limits={"rpc_timeout_s": 20.0})
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        yield fed, datasets


def column_values(datasets, column):
    import csv

    values = []
    for entry in datasets.values():
        with entry["credit"].path.open() as handle:
            values += [float(row[column]) for row in csv.DictReader(handle)]
    return np.array(values)


@pytest.mark.parametrize("column", ["x0", "x1", "y"])
def test_statistics_on_shares_match_numpy_within_1e3(credit_with_dealer, column):
    fed, datasets = credit_with_dealer
    inputs = {p: ("credit", column) for p in CREDIT_PARTIES}
    values = column_values(datasets, column)
    out = fed.statistics(inputs, 100.0, outputs=["count", "sum", "mean", "variance", "std"],
                         dealer="dealer", max_rows=10_000)
    assert out["count"] == 24_000
    assert out["sum"] == pytest.approx(values.sum(), abs=24_000 * 2.0**-16)
    for name, expected in (("mean", values.mean()), ("variance", values.var()),
                           ("std", values.std())):
        assert out[name] == pytest.approx(expected, abs=1e-3), name


def test_statistics_open_only_the_declared_outputs(credit_with_dealer):
    fed, datasets = credit_with_dealer
    inputs = {p: ("credit", "x1") for p in CREDIT_PARTIES}
    values = fed.statistics(inputs, 100.0, outputs=["std"], dealer="dealer", max_rows=10_000)
    result = values.job
    assert set(values) == {"std"}
    assert values["std"] == pytest.approx(column_values(datasets, "x1").std(), abs=1e-3)
    for party in CREDIT_PARTIES:
        openings = result.outputs[party]["openings"]
        declared = [o for o in openings if o["what"].startswith("declared")]
        assert declared == [{"what": "declared-outputs (shares)", "to": ["coordinator"],
                             "values": 1}]  # one value: the variance, which std is a bijection of
        masked = {o["what"] for o in openings} - {"declared-outputs (shares)"}
        assert masked <= {"beaver-differences", "masked-truncation-input",
                          "masked-comparison-input"}
        assert result.records[party].values_opened == 1
    assert result.outputs["dealer"]["tuples_served"] > 0
    assert result.records["dealer"].rows_used == 0  # the dealer touches no data
    # The same list of openings is in each party's signed ledger entry, the requester's receipt.
    for party in CREDIT_PARTIES:
        (receipt,) = result.receipts[party]
        assert receipt["event"] == "finished"
        assert receipt["body"]["openings"] == result.outputs[party]["openings"]


def test_statistics_to_a_party_recipient_and_bad_requests(credit_with_dealer):
    fed, datasets = credit_with_dealer
    inputs = {p: ("credit", "x0") for p in CREDIT_PARTIES}
    out = fed.statistics(inputs, 100.0, outputs=["count", "mean"], dealer="dealer",
                         max_rows=10_000, recipient="host-2")
    assert out["count"] == 24_000
    assert out["mean"] == pytest.approx(column_values(datasets, "x0").mean(), abs=1e-3)
    with pytest.raises(ConfigError, match="'dealer' must name a dealer that is not an input"):
        fed.statistics(inputs, 100.0, outputs=["mean"], dealer="guest")
    with pytest.raises(ConfigError, match="'outputs' must be a list of strings, one of"):
        fed.statistics(inputs, 100.0, outputs=["median"], dealer="dealer")
    clipped = fed.statistics(inputs, 0.5, outputs=["mean"], dealer="dealer", max_rows=10_000)
    assert clipped["mean"] == pytest.approx(
        np.clip(column_values(datasets, "x0"), -0.5, 0.5).mean(), abs=1e-3)  # not refused
