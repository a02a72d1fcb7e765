"""Live counters of one node for Prometheus (prometheus-client), in a registry of its own."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter("invisible_jobs", "Jobs by kind and outcome", ["kind", "outcome"],
                            registry=self.registry).labels
        self.rows = Counter("invisible_rows_touched", "Rows touched by finished jobs",
                            ["dataset"], registry=self.registry)
        self.bytes = Counter("invisible_bytes", "Protocol payload bytes", ["direction"],
                             registry=self.registry)
        self.refusals = Counter("invisible_refusals", "Jobs refused, by rule", ["rule"],
                                registry=self.registry)
        self.quota_remaining = Gauge(
            "invisible_quota_remaining", "What is left of a daily quota after the last "
            "reservation", ["dataset", "requester", "unit"], registry=self.registry)
        self._server: Any = None

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
