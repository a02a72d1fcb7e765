"""The examples keep working: the script runs, and the quickstart notebook's code cells run in
order, show tables, and give the numbers numpy gives on the plain sample data."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from invisible.api import Result, SecureSumResult, StatisticsResult
from invisible.samples import SAMPLE_COLUMNS, sample_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOK = EXAMPLES / "quickstart.ipynb"
DISTRICTS = 8
#: The jobs the notebook runs, by kind: what every institution's meter report must count.
NOTEBOOK_JOBS = {"connectivity": 1, "secure_sum": 2, "paillier_sum": 1, "statistics": 2,
                 "psi": 1, "vertical_statistics": 1, "horizontal_lr": 1}
#: The sample tables number their customers 1..240, 1..180 and 1..300: 1..180 in common.
IN_COMMON = 180


def test_local_federation_script_runs():
    done = subprocess.run([sys.executable, str(EXAMPLES / "local_federation.py")],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "195,564.16034" in done.stdout  # the city's total, as the result prints it
    assert "per party:" in done.stdout
    assert "statistics job" in done.stdout and "sample variance" in done.stdout
    assert done.stdout.count("meter report of") == 3


# -- the notebook ---------------------------------------------------------------------------

@dataclass
class NotebookRun:
    namespace: dict[str, Any]
    #: Per code cell id, the value of its last expression (what Jupyter displays), if any.
    displayed: dict[str, Any]


def run_code_cell(cell_id: str, source: str, namespace: dict[str, Any]) -> Any:
    """Run a cell as Jupyter does: its statements, then its last expression's value."""
    tree = ast.parse(source)
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr) or source.rstrip().endswith(";"):
        exec(compile(tree, f"<cell {cell_id}>", "exec"), namespace)
        return None
    body = ast.Module(body=tree.body[:-1], type_ignores=[])
    exec(compile(body, f"<cell {cell_id}>", "exec"), namespace)
    return eval(compile(ast.Expression(last.value), f"<cell {cell_id}>", "eval"), namespace)


@pytest.fixture(scope="module")
def notebook_run() -> Iterator[NotebookRun]:
    notebook = json.loads(NOTEBOOK.read_text())
    run = NotebookRun({}, {})
    try:
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"], f"cell {cell['id']} has stored outputs"
                source = "".join(cell["source"])
                value = run_code_cell(cell["id"], source, run.namespace)
                if value is not None:
                    run.displayed[cell["id"]] = value
        yield run
    finally:  # the notebook's last cell closes the session; this covers a cell that failed
        session = run.namespace.get("session")
        if session is not None:
            session.close()


@pytest.fixture(scope="module")
def plain() -> pd.DataFrame:
    """The institutions' sample rows in the clear: the reference answer."""
    return pd.concat([pd.read_csv(sample_path(party)) for party in SAMPLE_COLUMNS])


def sum_tolerance(rows: int, fractional_bits: int) -> float:
    """Encoding rounds each value to the nearest 2^-f; the masked sum itself is exact."""
    return rows * 2.0 ** -(fractional_bits + 1) + 1e-9


@pytest.mark.timeout(60)
def test_notebook_runs_in_order_and_stops_its_nodes(notebook_run):
    # The temporary folder is the session's first context, so it goes last: once it is
    # gone, the federation was closed and the nodes stopped by the notebook's last cell.
    assert not notebook_run.namespace["folder"].exists()


def test_every_displayed_value_is_a_table(notebook_run):
    assert notebook_run.displayed
    for cell_id, value in notebook_run.displayed.items():
        if cell_id == "horizontal-plot":  # an image: the training curve
            assert value.data[:8] == b"\x89PNG\r\n\x1a\n"
            continue
        assert "<table" in value._repr_html_(), cell_id
        if isinstance(value, Result):
            assert value.table().columns[0] in repr(value), cell_id
            json.dumps(value.to_json())
    shown = {v.kind for v in notebook_run.displayed.values() if isinstance(v, Result)}
    assert shown == {"connectivity", "secure_sum", "paillier_sum", "statistics", "psi",
                     "vertical_statistics"}  # horizontal_lr shows its history as a DataFrame
    assert any(isinstance(v, pd.DataFrame) for v in notebook_run.displayed.values())


def test_connectivity_confirms_every_pair(notebook_run):
    assert notebook_run.namespace["connectivity"].ok


def test_sums_match_plaintext(notebook_run, plain):
    city_total: SecureSumResult = notebook_run.namespace["city_total"]
    tolerance = sum_tolerance(len(plain), city_total.fractional_bits)
    assert city_total.value == pytest.approx(plain["monthly_spend"].sum(), abs=tolerance)

    expected = plain.groupby("district")["monthly_spend"].sum().reindex(range(DISTRICTS))
    frame = notebook_run.displayed["by-district"]
    assert list(frame["district"]) == list(range(DISTRICTS))
    np.testing.assert_allclose(frame["total"], expected, rtol=0, atol=tolerance)

    by_paillier: SecureSumResult = notebook_run.namespace["paillier_by_district"]
    assert by_paillier.kind == "paillier_sum"
    assert list(by_paillier.to_frame()["district"]) == list(range(DISTRICTS))
    # The same fixed-point integers summed by another protocol: the same totals, bit for bit.
    assert by_paillier.by_category == notebook_run.namespace["by_district"].by_category


def check_statistics(result: StatisticsResult, column: pd.Series, ddof: int) -> None:
    """Against numpy, within the protocol's documented error (2^-f units, f = 16):
    |mean error| <= 3 |mean| + 4 and |variance error| <= 3 E[x^2] + 2 |mean| + 8.
    Tighter than 1e-3 relative, which could not tell ddof=0 from ddof=1 on 720 rows."""
    ulp = 2.0 ** -16
    mean, square_mean = float(column.mean()), float(np.mean(np.square(column)))
    std = float(np.std(column, ddof=ddof))
    variance_error = ulp * (3 * square_mean + 2 * abs(mean) + 8)
    assert result.ddof == ddof
    assert result["count"] == pytest.approx(len(column), abs=3 * ulp)
    assert result["mean"] == pytest.approx(mean, abs=ulp * (3 * abs(mean) + 4))
    assert result["std"] == pytest.approx(std, abs=variance_error / std)
    assert abs(result["std"] - float(np.std(column, ddof=1 - ddof))) > variance_error / std


def test_statistics_match_numpy(notebook_run, plain):
    population: StatisticsResult = notebook_run.namespace["stats"]
    sample: StatisticsResult = notebook_run.namespace["sample_stats"]
    assert list(population) == ["count", "mean", "std"]
    check_statistics(population, plain["monthly_spend"], ddof=0)
    check_statistics(sample, plain["monthly_spend"], ddof=1)
    assert "population variance" in population._repr_html_()
    assert "sample variance" in sample._repr_html_()


def test_vertical_statistics_match_numpy_on_the_common_customers(notebook_run):
    assert notebook_run.namespace["common"].size == IN_COMMON
    tables = {p: pd.read_csv(sample_path(p)) for p in SAMPLE_COLUMNS}
    ids = {"bank": "customer_id", "hospital": "patient_id", "telco": "subscriber_id"}
    joined = None
    for party, table in tables.items():
        table = table.rename(columns={ids[party]: "id", "monthly_spend": f"{party}.spend"})
        joined = table if joined is None else joined.merge(table, on="id")
    values = joined[["bank.spend", "balance", "visits", "data_gb"]].to_numpy(dtype=float)
    across = notebook_run.namespace["across"]
    assert across.count == IN_COMMON and list(across.correlation.columns) == [
        "monthly_spend", "balance", "visits", "data_gb"]
    np.testing.assert_allclose(across.correlation.to_numpy(),
                               np.corrcoef(values, rowvar=False), rtol=0, atol=1e-4)
    np.testing.assert_allclose(across.summary()["mean"], values.mean(axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(across.summary()["std"], values.std(axis=0), rtol=0, atol=1e-6)
    assert notebook_run.displayed["correlation"].shape == (4, 4)


def test_horizontal_logistic_regression_learns_late_payments(notebook_run, plain):
    model = notebook_run.namespace["model"]
    assert model.n_rounds_ == 20 and list(notebook_run.displayed["horizontal"].columns) == [
        "round", "loss", "seconds", "bytes_sent"]
    assert model.score(plain, plain["late_payment"]) > 0.75
    assert model.history_["loss"].iloc[-1] < model.history_["loss"].iloc[0]


def test_meter_reports_count_every_job(notebook_run, plain):
    reports: dict[str, pd.DataFrame] = notebook_run.namespace["reports"]
    assert set(reports) == set(SAMPLE_COLUMNS)
    rows = {party: len(pd.read_csv(sample_path(party))) for party in SAMPLE_COLUMNS}
    for party, report in reports.items():
        by_kind = report.groupby("kind")[["jobs", "failed", "refused", "rows_touched",
                                          "bytes_released"]].sum()
        assert by_kind["jobs"].to_dict() == NOTEBOOK_JOBS, party
        assert (by_kind[["failed", "refused"]] == 0).all().all(), party
        for kind, jobs in NOTEBOOK_JOBS.items():
            touched = {"connectivity": 0, "vertical_statistics": IN_COMMON}.get(
                kind, rows[party] * jobs)
            assert by_kind.loc[kind, "rows_touched"] == touched, (party, kind)
        assert by_kind.loc["secure_sum", "bytes_released"] > 0, party


@pytest.mark.timeout(180)
def test_the_notebook_runs_headless_in_a_kernel_and_leaves_no_folder_behind(tmp_path):
    """As a user's Jupyter runs it (nbclient, a real IPython kernel), in under two minutes;
    every temporary folder it made (the CA's private key among them) is gone after."""
    import os
    import time

    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    started = time.monotonic()
    client = NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "TMPDIR": str(scratch)})
    elapsed = time.monotonic() - started
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("text/html" in o.get("data", {}) for o in outputs) >= 8
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the training curve
    assert elapsed < 120
    assert [p.name for p in scratch.iterdir() if p.name.startswith("invisible")] == []
