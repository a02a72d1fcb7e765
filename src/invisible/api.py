"""The notebook facade: what an analyst or an auditor imports.

    from invisible.api import Federation, meter_report

    with Federation.from_config("parties/coordinator.toml") as federation:
        result = federation.secure_sum({...}, bound=100_000.0)   # a SecureSumResult
        stats = federation.run(StatisticsParams(...))              # any kind, typed
    meter_report("parties/bank/party.toml")      # a pandas DataFrame
    alignments("parties/bank/party.toml")        # the node's alignments, a DataFrame
    approvals("dpo.toml")                        # jobs held for an approver, a DataFrame
    Approver.from_config("dpo.toml").approve("bank", job_id, "purpose checked")

Every result shows itself as a table (``repr`` and, in a notebook, HTML),
and gives ``to_frame()`` and ``to_json()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from invisible.coordinator.approver import Approver
from invisible.coordinator.federation import Federation
from invisible.estimators import HorizontalLogisticRegression, VerticalLogisticRegression
from invisible.jobspec import JobResult
from invisible.kinds.bandwidth import BandwidthParams, BandwidthResult
from invisible.kinds.connectivity import ConnectivityParams, ConnectivityResult
from invisible.kinds.horizontal_lr import HorizontalLrParams, HorizontalLrResult
from invisible.kinds.mul_benchmark import MulBenchmarkParams, MulBenchmarkResult
from invisible.kinds.paillier_sum import PaillierSumParams
from invisible.kinds.params import ColumnsRef, InputRef
from invisible.kinds.psi import PsiParams, PsiResult
from invisible.kinds.results import Result
from invisible.kinds.secure_sum import SecureSumParams, SecureSumResult
from invisible.kinds.statistics import StatisticsParams, StatisticsResult
from invisible.kinds.vertical_evaluate import VerticalEvaluateParams, VerticalEvaluateResult
from invisible.kinds.vertical_lr import VerticalLrParams
from invisible.kinds.vertical_predict import VerticalPredictParams
from invisible.kinds.vertical_statistics import (
    VerticalStatisticsParams,
    VerticalStatisticsResult,
)
from invisible.metering.report import ledger_report, report_frame
from invisible.node.config import load_party_config

if TYPE_CHECKING:
    import pandas

__all__ = [
    "Approver",
    "BandwidthParams",
    "BandwidthResult",
    "ColumnsRef",
    "ConnectivityParams",
    "ConnectivityResult",
    "Federation",
    "HorizontalLogisticRegression",
    "HorizontalLrParams",
    "HorizontalLrResult",
    "InputRef",
    "JobResult",
    "MulBenchmarkParams",
    "MulBenchmarkResult",
    "PaillierSumParams",
    "PsiParams",
    "PsiResult",
    "Result",
    "SecureSumParams",
    "SecureSumResult",
    "StatisticsParams",
    "StatisticsResult",
    "VerticalEvaluateParams",
    "VerticalEvaluateResult",
    "VerticalLogisticRegression",
    "VerticalLrParams",
    "VerticalPredictParams",
    "VerticalStatisticsParams",
    "VerticalStatisticsResult",
    "alignments",
    "approvals",
    "meter_bill",
    "meter_report",
]


def meter_report(party_config: Path | str, since: str | None = None) -> pandas.DataFrame:
    """The meter report of a party node (read from the ledger its TOML names) as a DataFrame.

    One row per (requester, dataset, job kind): jobs, failed, refused,
    interrupted, rows touched, bytes sent/received/released, values opened.
    `since` is an ISO date or time (UTC).
    """
    config = load_party_config(party_config)
    return report_frame(ledger_report(config.ledger.path, since))


def meter_bill(party_config: Path | str, since: str | None = None, until: str | None = None,
               requester: str | None = None) -> pandas.DataFrame:
    """What the jobs on a party node's data cost, by its price lists, as a DataFrame.

    One row per (requester, dataset, currency) for jobs ended in [since, until) (ISO dates
    or times, UTC): jobs, rows, megabytes, rounds, tuples, ciphertext operations, CPU
    seconds, rho, and the amount (exact decimals: the sum of the receipts' amounts).
    """
    from invisible.metering.billing import bill_frame, ledger_bill

    config = load_party_config(party_config)
    return bill_frame(ledger_bill(config.ledger.path, since, until, requester))


def approvals(approver_config: Path | str,
              parties: list[str] | None = None) -> pandas.DataFrame:
    """The jobs held for an approver's decision at the nodes its file names (or `parties`),
    as a DataFrame: one row per (party, job) with what the job declares (kind, requester,
    dataset, columns, recipient, rho, parties, parameters), its deadline, spec digest and
    the decisions so far. Decide with :class:`Approver` (``approve``, ``reject``,
    ``withdraw``)."""
    import pandas

    from invisible.coordinator.approver import describe

    with Approver.from_config(approver_config) as approver:
        return pandas.DataFrame(describe(approver.pending(parties)), columns=[
            "party", "job_id", "kind", "requester", "dataset", "columns", "recipient", "rho",
            "parties", "params", "deadline", "spec_digest", "rules"])


def alignments(party_config: Path | str) -> pandas.DataFrame:
    """The alignments a party node keeps (its rows of set intersections), as a DataFrame read
    at the node: one row per alignment in force (expired ones are deleted), with its rows,
    the dataset and id column it was made from, the job's parties, requester and dates.
    An operator's view: the rows themselves never leave the node, and neither does this."""
    import pandas

    from invisible.kinds.alignments import AlignmentStore

    config = load_party_config(party_config)
    kept = AlignmentStore(config.alignments_dir).list()
    columns = ["name", "rows", "dataset", "column", "parties", "requester", "job_id", "created",
               "expires"]
    return pandas.DataFrame([{**a.meta(), "rows": a.size} for a in kept], columns=columns)
