"""Live counters of one node for Prometheus (prometheus-client), in a registry of its own.

Every label takes a bounded set of values: `kind` the registered kinds (else `unknown`),
`dataset` the node's datasets, `requester` the identities a policy rule admitted (so
certificates of the federation's CA), `rule` and `role` fixed names. The endpoint listens
on loopback unless told otherwise, and can be served over TLS (with client certificates
required, if a CA for them is given).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: The `kind` label of a job whose kind is not registered at the node.
UNKNOWN_KIND = "unknown"


@dataclass(frozen=True)
class MetricsTls:
    """The metrics endpoint over HTTPS: its certificate and key, and optionally the CA whose
    client certificates it requires (the scrapers')."""

    cert: Path
    key: Path
    client_ca: Path | None = None


def utc_day() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class QuotaRemaining(Collector):
    """`invisible_quota_remaining`: what is left today of each daily quota, as of the last
    reservation; a quota last reserved on an earlier (UTC) day shows its whole limit, since
    quotas start again each day (a plain gauge kept yesterday's last value until the next
    job)."""

    def __init__(self, today: Callable[[], str] = utc_day) -> None:
        self._today = today
        self._lock = threading.Lock()
        self._left: dict[tuple[str, str, str], tuple[str, float, float]] = {}

    def set(self, dataset: str, requester: str, unit: str, limit: float, left: float) -> None:
        with self._lock:
            self._left[(dataset, requester, unit)] = (self._today(), limit, max(0, left))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        today = self._today()
        family = GaugeMetricFamily(
            "invisible_quota_remaining", "What is left today of a daily quota",
            labels=["dataset", "requester", "unit"])
        with self._lock:
            for labels, (day, limit, left) in sorted(self._left.items()):
                family.add_metric(list(labels), left if day == today else limit)
        yield family


class NodeMetrics:
    """`kinds`: the kinds the node runs; any other kind a request names is counted as
    `unknown` (a label per made-up name would let any requester grow the series without
    end). None: every kind as given (tests of metering alone)."""

    def __init__(self, kinds: Iterable[str] | None = None,
                 today: Callable[[], str] = utc_day) -> None:
        self.registry = CollectorRegistry()
        self._kinds = None if kinds is None else frozenset(kinds)
        self._jobs = Counter("invisible_jobs", "Jobs by kind and outcome", ["kind", "outcome"],
                             registry=self.registry)
        self._duration = Histogram(
            "invisible_job_duration_seconds", "How long admitted jobs ran here, by kind",
            ["kind"], registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, float("inf")))
        self.rows = Counter("invisible_rows_touched", "Rows touched by finished jobs",
                            ["dataset"], registry=self.registry)
        self.bytes = Counter("invisible_bytes", "Protocol payload bytes", ["direction"],
                             registry=self.registry)
        self.refusals = Counter("invisible_refusals", "Jobs refused, by rule", ["rule"],
                                registry=self.registry)
        self.certificate_days_left = Gauge(
            "invisible_certificate_days_left", "Days until a certificate expires: the node's "
            "own, and the CA's", ["certificate"], registry=self.registry)
        self.revoked_calls = Counter(
            "invisible_revoked_calls", "Calls refused for a revoked certificate, by the "
            "caller's role", ["role"], registry=self.registry)
        self.quota_remaining = QuotaRemaining(today)
        self.registry.register(self.quota_remaining)
        self._privacy_total = Gauge(
            "invisible_privacy_budget_remaining", "What is left of a privacy budget in all "
            "(zCDP rho; daily budgets are invisible_quota_remaining with unit rho)",
            ["dataset", "requester"], registry=self.registry)
        self._server: Any = None

    def privacy_remaining(self, dataset: str, requester: str, period: str, limit: float,
                          left: float) -> None:
        """What is left of a privacy budget ("day" or "total"; requester "*": the
        dataset's own budget) after a reservation."""
        if period == "day":
            self.quota_remaining.set(dataset, requester, "rho", limit, left)
        else:
            self._privacy_total.labels(dataset, requester).set(max(0.0, left))

    def _kind(self, kind: str) -> str:
        return kind if self._kinds is None or kind in self._kinds else UNKNOWN_KIND

    def jobs(self, kind: str, outcome: str) -> Any:
        return self._jobs.labels(self._kind(kind), outcome)

    def observe_duration(self, kind: str, seconds: float) -> None:
        self._duration.labels(self._kind(kind)).observe(seconds)

    def serve(self, address: str, tls: MetricsTls | None = None) -> int:
        """Expose /metrics on host:port (port 0 picks one), over TLS if `tls`; returns the
        port."""
        host, _, port = address.rpartition(":")
        options: dict[str, Any] = {}
        if tls is not None:
            options = {"certfile": str(tls.cert), "keyfile": str(tls.key)}
            if tls.client_ca is not None:
                options.update(client_cafile=str(tls.client_ca), client_auth_required=True)
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry,
                                            **options)
        self._server = server
        return int(server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
