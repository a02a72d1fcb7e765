"""Twelve party nodes as processes: the first job after they start finds every peer.

On an earlier main, with nine or more parties connecting to each other at
once, a transient "Handshake read failed (Endpoint closing)" was taken for a
certificate failure and failed the first job at once, though every
certificate was valid. Transient breaks are now retried within the deadline;
only a refused certificate is final, and the error says which it was.
"""

from __future__ import annotations

import grpc
import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import NodeProcesses, write_local_federation
from invisible.net.errors_grpc import is_transient_failure, is_verification_failure

PARTIES = [f"p{i}" for i in range(12)]


class Failure(grpc.RpcError):
    def __init__(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(("details", "transient"), [
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5: Handshake read "
     "failed (Endpoint closing)", True),
    ("failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:5: Socket "
     "closed", True),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5: Tls handshake "
     "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL routines:"
     "OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate", False),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5: Custom "
     "verification check failed with error: UNAUTHENTICATED: Hostname Verification Check "
     "failed.", False),
])
def test_a_broken_off_handshake_is_retried_and_a_refused_certificate_is_final(details, transient):
    error = Failure(details)
    assert is_transient_failure(error) is transient
    assert is_verification_failure(error) is not transient


@pytest.mark.timeout(240)
def test_twelve_party_processes_run_their_first_job_together(tmp_path):
    layout = write_local_federation(tmp_path, PARTIES, limits={"rpc_timeout_s": 60.0})
    with NodeProcesses(layout) as nodes, \
            Federation.from_config(layout.coordinator_config) as federation:
        federation.health(timeout_s=120)
        nodes.check_alive()
        result = federation.connectivity()  # every pair handshakes at once, for the first time
        assert result.ok
        assert all(len(peers) == 11 for peers in result.peers_confirmed.values())
