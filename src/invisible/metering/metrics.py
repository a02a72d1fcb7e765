"""Live counters of one node for Prometheus (prometheus-client), in a registry of its own."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: The `kind` label of a job whose kind is not registered at the node.
UNKNOWN_KIND = "unknown"


class NodeMetrics:
    """`kinds`: the kinds the node runs; any other kind a request names is counted as
    `unknown` (a label per made-up name would let any requester grow the series without
    end). None: every kind as given (tests of metering alone)."""

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
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
        self.quota_remaining = Gauge(
            "invisible_quota_remaining", "What is left of a daily quota after the last "
            "reservation", ["dataset", "requester", "unit"], registry=self.registry)
        self._server: Any = None

    def _kind(self, kind: str) -> str:
        return kind if self._kinds is None or kind in self._kinds else UNKNOWN_KIND

    def jobs(self, kind: str, outcome: str) -> Any:
        return self._jobs.labels(self._kind(kind), outcome)

    def observe_duration(self, kind: str, seconds: float) -> None:
        self._duration.labels(self._kind(kind)).observe(seconds)

    def serve(self, address: str) -> int:
        """Expose /metrics on host:port (port 0 picks one); returns the port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
