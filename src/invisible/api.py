"""The notebook facade: what an analyst or an auditor imports.

    from invisible.api import Federation, meter_report

    with Federation.from_config("parties/coordinator.toml") as federation:
        result = federation.secure_sum({...}, bound=100_000.0)   # a SecureSumResult
        stats = federation.run(StatisticsParams(...))              # any kind, typed
    meter_report("parties/bank/party.toml")      # a pandas DataFrame

Every result shows itself as a table (``repr`` and, in a notebook, HTML),
and gives ``to_frame()`` and ``to_json()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from invisible.coordinator.federation import Federation
from invisible.jobspec import JobResult
from invisible.kinds.bandwidth import BandwidthParams, BandwidthResult
from invisible.kinds.connectivity import ConnectivityParams, ConnectivityResult
from invisible.kinds.mul_benchmark import MulBenchmarkParams, MulBenchmarkResult
from invisible.kinds.paillier_sum import PaillierSumParams
from invisible.kinds.params import InputRef
from invisible.kinds.results import Result
from invisible.kinds.secure_sum import SecureSumParams, SecureSumResult
from invisible.kinds.statistics import StatisticsParams, StatisticsResult
from invisible.metering.report import ledger_report, report_frame
from invisible.node.config import load_party_config

if TYPE_CHECKING:
    import pandas

__all__ = [
    "BandwidthParams",
    "BandwidthResult",
    "ConnectivityParams",
    "ConnectivityResult",
    "Federation",
    "InputRef",
    "JobResult",
    "MulBenchmarkParams",
    "MulBenchmarkResult",
    "PaillierSumParams",
    "Result",
    "SecureSumParams",
    "SecureSumResult",
    "StatisticsParams",
    "StatisticsResult",
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
