"""Job kinds: declared parameters (strict, one parser), the registry, results, docs, templates."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, free_port, write_local_federation
from invisible.coordinator.templates import EXAMPLE_PARTIES, job_template, kinds_markdown
from invisible.errors import ConfigError, PolicyError, ProtocolError
from invisible.jobspec import JobRecord, JobResult
from invisible.kinds.base import JobKind
from invisible.kinds.params import InputRef
from invisible.kinds.registry import KINDS, find_kind
from invisible.kinds.secure_sum import SecureSumParams, SecureSumResult
from invisible.kinds.statistics import StatisticsParams
from invisible.node.config import DatasetConfig
from invisible.node.datasets import load_dataset
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets, sample_path

ROOT = Path(__file__).resolve().parent.parent
PARTIES = ("bank", "hospital", "telco")
INPUTS = {p: {"dataset": "customers", "column": "monthly_spend"} for p in PARTIES}


def sum_params(**changes):
    return {"inputs": INPUTS, "bound": 1000.0, **changes}


# --- declared parameters: one strict parser -------------------------------------------------

@pytest.mark.parametrize(("changes", "message"), [
    ({"elementwise": "false", "length": 3}, "'elementwise' must be true or false; got a string 'false'"),
    ({"bound": "lots"}, "'bound' must be a number; got a string 'lots'"),
    ({"bound": True}, "'bound' must be a number; got a boolean true"),
    ({"bound": math.inf}, "'bound' must be a finite number"),
    ({"bound": math.nan}, "'bound' must be a finite number"),
    ({"bound": 0.0}, "'bound' must be a number > 0; got a number 0.0"),
    ({"max_rows": 0}, "'max_rows' must be an integer >= 1, <= 1099511627776; got an integer 0"),
    ({"categories": 10**12, "group_by": "district"}, "'categories' must be an integer >= 1, <= 1048576"),
    ({"max_rows": 10.0}, "'max_rows' must be an integer; got a number 10.0"),
    ({"max_rows": "10"}, "'max_rows' must be an integer; got a string '10'"),
    ({"fractional_bits": 41}, "'fractional_bits' must be an integer >= 0, <= 40"),
    ({"group_by": ""}, "'group_by' must be a non-empty string"),
    ({"group_by": 3}, "'group_by' must be a non-empty string of at most 128 characters; got an integer 3"),
    ({"colour": "red"}, "unknown parameter\\(s\\) 'colour'"),
    ({"x\nforged log line": 1}, "unknown parameter\\(s\\) 'x\\\\nforged log line'"),
    ({"bound": 10**400}, "'bound' must be a finite number"),
    ({"key_holder": "bank"}, "unknown parameter"),
    ({"inputs": {"bank": {"dataset": "customers"}}}, "'inputs' of party 'bank' must be"),
    ({"inputs": []}, "'inputs' must be a table naming"),
])
def test_a_wrong_parameter_is_named_with_what_was_expected(changes, message):
    with pytest.raises(ConfigError, match=message):
        SecureSumParams.parse(sum_params(**changes), PARTIES)


def test_a_missing_parameter_is_named_as_required():
    with pytest.raises(ConfigError, match="secure_sum: 'bound' is required \\(public bound"):
        SecureSumParams.parse({"inputs": INPUTS}, PARTIES)


def test_bounds_hold_exactly_at_their_edges():
    assert SecureSumParams.parse(sum_params(max_rows=1), PARTIES).max_rows == 1
    assert SecureSumParams.parse(sum_params(fractional_bits=0), PARTIES).fractional_bits == 0
    assert SecureSumParams.parse(
        sum_params(fractional_bits=40, bound=1.0, max_rows=1), PARTIES).fractional_bits == 40
    stats = {"inputs": {"bank": INPUTS["bank"], "hospital": INPUTS["hospital"]}, "dealer": "d",
             "outputs": ["mean"]}
    parties = ("bank", "hospital", "d")
    assert StatisticsParams.parse({**stats, "bound": 16383.5}, parties).bound == 16383.5
    with pytest.raises(ConfigError, match="'bound' must be a number > 0, < 16384"):
        StatisticsParams.parse({**stats, "bound": 16384}, parties)
    with pytest.raises(ConfigError, match="'ddof' must be one of 0, 1; got an integer 2"):
        StatisticsParams.parse({**stats, "bound": 10.0, "ddof": 2}, parties)
    with pytest.raises(ConfigError, match="statistics: the worst case .* lower 'max_rows'"):
        StatisticsParams.parse({**stats, "bound": 8000.0, "max_rows": 1 << 20}, parties)
    with pytest.raises(ConfigError, match="without repeats"):
        StatisticsParams.parse({**stats, "bound": 10.0, "outputs": ["mean", "mean"]}, parties)


def test_rules_across_fields_and_parties():
    with pytest.raises(ConfigError, match="'group_by' and 'categories' \\(how many\\) go together"):
        SecureSumParams.parse(sum_params(group_by="district"), PARTIES)
    with pytest.raises(ConfigError, match="'group_by' and 'categories'"):
        SecureSumParams.parse(sum_params(categories=8), PARTIES)  # was silently ignored
    with pytest.raises(ConfigError, match="'inputs' must name a dataset and column for every"):
        SecureSumParams.parse(sum_params(), ("bank", "hospital"))
    with pytest.raises(ConfigError, match="recipient 'nobody' is not a party"):
        SecureSumParams.parse(sum_params(recipient="nobody"), PARTIES)
    with pytest.raises(ConfigError, match=">= 2\\^63"):
        SecureSumParams.parse(sum_params(bound=1e12, max_rows=10**6), PARTIES)


def test_parameters_round_trip_through_json_for_every_kind():
    for kind in KINDS:
        document = tomllib.loads(job_template(kind.name))
        raw = {k: v for k, v in document["job"].items() if k not in ("kind", "coordinator")}
        if "inputs" in document:
            raw["inputs"] = document["inputs"]
        params = kind.params_type.read(raw)
        parties = params.job_parties((*EXAMPLE_PARTIES,))
        checked = kind.params_type.parse(raw, parties)
        assert kind.params_type.parse(checked.to_json(), parties) == checked, kind.name


# --- the registry ---------------------------------------------------------------------------

def test_every_kind_is_registered_once_and_declares_every_field():
    names = [kind.name for kind in KINDS]
    assert len(set(names)) == len(names)
    assert set(names) == {"secure_sum", "paillier_sum", "statistics", "psi",
                          "vertical_statistics", "horizontal_lr", "vertical_lr",
                          "vertical_predict", "vertical_evaluate",
                          "connectivity",
                          "bandwidth", "mul_benchmark"}
    for kind in KINDS:
        assert isinstance(kind, JobKind)
        assert kind.params_type.KIND == kind.name and kind.summary and kind.version >= 1
        assert all(spec.declaration.doc for spec in kind.params_type.fields())


def test_unknown_kinds_and_versions_are_refused_naming_what_exists():
    with pytest.raises(ConfigError, match="unknown job kind 'median' \\(known: bandwidth, "):
        find_kind("median")
    with pytest.raises(ConfigError, match="version 2 is not run here .*version 1"):
        find_kind("secure_sum", 2)
    assert find_kind("secure_sum", 1).name == "secure_sum"


# --- results people can read ----------------------------------------------------------------

def gathered(kind: str, parties=PARTIES) -> JobResult:
    return JobResult("job-1", kind, parties, requester="coordinator",
                     statuses={}, seconds=0.0123)


def test_per_category_totals_are_labelled_and_value_says_what_to_use():
    result = SecureSumResult(gathered("secure_sum"), np.array([1.5, 2.25, 3.0]), "coordinator",
                             16, "district")
    frame = result.to_frame()
    assert list(frame.columns) == ["district", "total"]
    assert frame["district"].tolist() == [0, 1, 2] and frame["total"].tolist() == [1.5, 2.25, 3.0]
    assert result.by_category == {0: 1.5, 1: 2.25, 2: 3.0}
    with pytest.raises(ProtocolError, match="3 totals \\(per 'district'\\); use .by_category"):
        _ = result.value
    text = repr(result)
    assert "district" in text and "2.25000" in text  # five decimals: 2^-16 resolution
    assert "2^-16" in text
    html = result._repr_html_()
    assert "<table>" in html and "<td>2.25000</td>" in html


def test_a_total_kept_by_a_party_says_so():
    result = SecureSumResult(gathered("secure_sum"), None, "bank", 16)
    assert "went to party 'bank'" in repr(result)
    with pytest.raises(ProtocolError, match="went to party 'bank'"):
        _ = result.value


def test_html_escapes_what_it_shows():
    result = SecureSumResult(gathered("secure_sum"), np.array([1.0, 2.0]), "coordinator", 16,
                             "<b>x</b>")
    assert "<b>" not in result._repr_html_()


def test_records_are_in_every_report():
    job = gathered("secure_sum")
    job.statuses = {}
    result = SecureSumResult(job, np.array([3.0]), "coordinator", 16)
    assert result.records == {}
    job.statuses = {"bank": type("S", (), {"record": JobRecord(rows_used=240)})()}
    assert "240" in result.report()


# --- docs and templates match the declarations ------------------------------------------------

def test_the_readme_documents_every_kind_as_declared():
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- job kinds: begin.*?-->\n(.*)<!-- job kinds: end -->", readme, re.S)
    assert found, "README lacks the generated reference of job kinds"
    assert found.group(1) == kinds_markdown(), "run `invisible job kinds --markdown`"


# --- through nodes: strict on the coordinator, and again at every node -----------------------

@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds")
    layout = write_local_federation(folder, list(SAMPLE_COLUMNS), sample_datasets(),
                                    dealers=["dealer"], limits={"rpc_timeout_s": 20.0})
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        yield fed, nodes


def sample_values(column="monthly_spend"):
    return np.concatenate([
        load_dataset(DatasetConfig(SAMPLE_DATASET, sample_path(p), SAMPLE_COLUMNS[p]))
        .column(column) for p in SAMPLE_COLUMNS])


def test_the_coordinator_refuses_bad_parameters_before_any_node_is_contacted(tmp_path):
    layout = write_local_federation(tmp_path, list(PARTIES))  # no node is running
    text = layout.coordinator_config.read_text()
    for party in PARTIES:  # and none could be reached
        text = re.sub(rf'{party} = "127.0.0.1:\d+"', f'{party} = "127.0.0.1:{free_port()}"', text)
    layout.coordinator_config.write_text(text)
    inputs = {p: ("customers", "monthly_spend") for p in PARTIES}
    with Federation.from_config(layout.coordinator_config) as fed:
        with pytest.raises(ConfigError, match="'bound' must be a number > 0"):
            fed.secure_sum(inputs, bound=-1.0)
        with pytest.raises(ConfigError, match="'ddof' must be one of 0, 1"):
            fed.statistics(inputs, 10.0, outputs=["mean"], dealer="dealer", ddof=3)


def test_every_node_checks_the_parameters_again_and_records_the_refusal(samples):
    fed, nodes = samples
    raw = {**sum_params(), "elementwise": "false"}  # bypasses the coordinator's check
    with pytest.raises(ConfigError, match="'elementwise' must be true or false"):
        fed._run_checked("secure_sum", 1, raw, PARTIES, None, None)
    ledger = nodes.nodes["bank"].ledger
    assert ledger is not None
    last = [e for e in ledger.entries() if e.event != "witnessed"][-1]  # heads come any time
    assert last.event == "refused" and last.body["rule"] == "invalid-request"
    assert "'elementwise' must be true or false" in last.body["detail"]


def test_a_node_refuses_a_kind_version_it_does_not_run(samples):
    fed, _ = samples
    with pytest.raises(ConfigError, match="'connectivity' version 2 is not run here"):
        fed._run_checked("connectivity", 2, {}, PARTIES, None, None)


def test_results_of_every_data_kind_through_nodes(samples):
    fed, _ = samples
    values = sample_values()
    inputs = {p: (SAMPLE_DATASET, "monthly_spend") for p in SAMPLE_COLUMNS}
    total = fed.secure_sum(inputs, 100_000.0, max_rows=1000)
    assert total.value == pytest.approx(values.sum(), abs=720 * 2.0**-17)
    assert f"{values.sum():,.2f}"[:-1] in repr(total)
    by_paillier = fed.paillier_sum(inputs, 100_000.0, max_rows=1000, key_holder="telco")
    assert by_paillier.value == pytest.approx(values.sum(), abs=720 * 2.0**-17)
    assert by_paillier.kind == "paillier_sum"
    assert "key holder 'telco', which learned the total too" in repr(by_paillier)
    stats = fed.statistics(inputs, 5000.0, outputs=["count", "mean", "variance", "std"],
                           dealer="dealer", max_rows=1000, ddof=1)
    # the protocol's stated bounds (the sample factor at most doubles the variance's)
    mean_error = 2.0**-16 * (3 * abs(values.mean()) + 4)
    variance_error = 2 * 2.0**-16 * (3 * np.mean(values**2) + 2 * abs(values.mean()) + 8)
    assert stats["count"] == 720
    assert stats["mean"] == pytest.approx(values.mean(), abs=mean_error)
    assert stats["variance"] == pytest.approx(values.var(ddof=1), abs=variance_error)
    assert stats["std"] == pytest.approx(values.std(ddof=1),
                                         abs=variance_error / (2 * values.std(ddof=1)))
    # the sample variance differs from the population's by far more than the tolerance here
    assert abs(values.var(ddof=1) - values.var()) > 100
    assert stats.to_frame()["statistic"].tolist() == ["count", "mean", "variance", "std"]
    assert "sample variance" in repr(stats) and "<table>" in stats._repr_html_()
    connectivity = fed.connectivity()
    assert connectivity.ok and "<table>" in connectivity._repr_html_()


def test_a_failed_job_is_named_and_releases_nothing(samples):
    fed, _ = samples
    inputs = {p: (SAMPLE_DATASET, "monthly_spend") for p in SAMPLE_COLUMNS}
    with pytest.raises((ConfigError, PolicyError), match="no column 'nope'"):
        fed.secure_sum({**inputs, "bank": (SAMPLE_DATASET, "nope")}, 10.0, max_rows=1000)


def test_inputs_accept_refs_and_pairs():
    params = SecureSumParams(inputs={"a": InputRef("d", "c"), "b": InputRef("d", "c")},
                             bound=1.0)
    assert SecureSumParams.parse(params.to_json(), ("a", "b")) == params
    pairs = SecureSumParams(inputs={"a": ("d", "c"), "b": ("d", "c")}, bound=1.0)  # type: ignore[dict-item]
    assert SecureSumParams.parse(pairs.to_json(), ("a", "b")) == params


def test_a_kind_that_reads_data_cannot_skip_declaring_it():
    from invisible.kinds.base import UsesNoData

    class Forgetful(JobKind):  # run and finish, but no declare/plan: the policy would be skipped
        name = "forgetful"

        def run(self, params, context):
            raise AssertionError

        def finish(self, params, job):
            raise AssertionError

    with pytest.raises(TypeError, match="abstract"):
        Forgetful()

    class Diagnostic(UsesNoData, Forgetful):  # opting in to "no data" is explicit
        pass

    kind = Diagnostic()
    assert kind.declare(None, "a") is None and kind.plan(None, "a", None) is None
