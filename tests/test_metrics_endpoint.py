"""The Prometheus endpoint: on loopback by default, over HTTPS (with scraper certificates
required) when configured, and quota gauges that start again at the day boundary.

Guards invisible.metering.metrics (QuotaRemaining, NodeMetrics.serve) and the [metrics]
table of a party's config.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from invisible.errors import ConfigError
from invisible.metering.metrics import MetricsTls, NodeMetrics
from invisible.net.pki import init_pki
from invisible.node.config import load_party_config

BASE = """[party]
id = "bank"
listen = "127.0.0.1:0"

[tls]
ca = "pki/ca.pem"
cert = "pki/bank.pem"
key = "pki/bank.key"

[metrics]
"""


def config_with(folder: Path, metrics_table: str) -> Path:
    """A party config whose [metrics] table holds `metrics_table`."""
    path = folder / "bank.toml"
    path.write_text(BASE + metrics_table + "\n")
    return path


def sample(metrics: NodeMetrics, **labels: str) -> float | None:
    return metrics.registry.get_sample_value("invisible_quota_remaining", labels)


def test_a_quota_left_yesterday_shows_whole_today():
    day = ["2026-11-30"]
    metrics = NodeMetrics(today=lambda: day[0])
    metrics.quota_remaining.set("customers", "analyst", "jobs", limit=5, left=2)
    metrics.quota_remaining.set("customers", "*", "rows", limit=100, left=-3)
    labels = {"dataset": "customers", "requester": "analyst", "unit": "jobs"}
    assert sample(metrics, **labels) == 2
    assert sample(metrics, dataset="customers", requester="*", unit="rows") == 0  # never < 0
    day[0] = "2026-12-01"  # midnight UTC: the quotas start again, with no job yet
    assert sample(metrics, **labels) == 5
    assert sample(metrics, dataset="customers", requester="*", unit="rows") == 100
    metrics.quota_remaining.set("customers", "analyst", "jobs", limit=5, left=4)
    assert sample(metrics, **labels) == 4


@pytest.mark.parametrize("table, listen", [
    ('listen = "9101"', "127.0.0.1:9101"),
    ("listen = 9101", "127.0.0.1:9101"),
    ('listen = "0.0.0.0:9101"', "0.0.0.0:9101"),
])
def test_a_port_alone_listens_on_loopback(tmp_path, table, listen):
    config = load_party_config(config_with(tmp_path, table))
    assert config.metrics_listen == listen and config.metrics_tls is None


@pytest.mark.parametrize("table, why", [
    ('listen = "9101"\ncert = "m.pem"', "metrics.cert HTTPS needs both cert and key"),
    ('listen = "9101"\nclient_ca = "c.pem"', "metrics.client_ca requires cert and key"),
    ('listen = "host:port"', "metrics.listen must be a port, or host:port"),
    ('listen = "99999"', "metrics.listen must be a port, or host:port"),
    ('cert = "m.pem"\nkey = "m.key"', "metrics.listen is missing"),
])
def test_a_metrics_table_that_cannot_serve_is_refused_naming_the_key(tmp_path, table, why):
    with pytest.raises(ConfigError, match=why):
        load_party_config(config_with(tmp_path, table))


def fetch(port: int, pki: Path, client: str | None) -> str:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.check_hostname = False  # the node's certificate names the node, not 127.0.0.1
    if client is not None:
        context.load_cert_chain(pki / f"{client}.pem", pki / f"{client}.key")
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=context,
                                timeout=10) as answer:
        return answer.read().decode()


def test_metrics_over_https_require_a_scraper_certificate_from_the_given_ca(tmp_path):
    pki = tmp_path / "pki"
    init_pki(pki, ["bank"], ["scraper"])
    metrics = NodeMetrics()
    metrics.jobs("secure_sum", "finished").inc()
    port = metrics.serve("127.0.0.1:0", MetricsTls(pki / "bank.pem", pki / "bank.key",
                                                   client_ca=pki / "ca.pem"))
    try:
        assert 'invisible_jobs_total{kind="secure_sum",outcome="finished"} 1.0' in \
            fetch(port, pki, "scraper")
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            fetch(port, pki, None)  # no client certificate: the handshake fails
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        metrics.stop()
