"""One place that maps domain errors to gRPC status codes and back."""

from __future__ import annotations

import grpc

from invisible.errors import (
    ConfigError,
    InvisibleError,
    MessageTooLargeError,
    PartyUnavailableError,
    PeerAuthenticationError,
    PolicyError,
    ProtocolError,
)

_TO_CODE: list[tuple[type[InvisibleError], grpc.StatusCode]] = [
    (MessageTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (PolicyError, grpc.StatusCode.PERMISSION_DENIED),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (PartyUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
]

#: A certificate was checked and refused: final, whatever the deadline.
_VERIFICATION_MARKERS = ("certificate_verify_failed", "verification check failed",
                         "certificate verify failed", "bad certificate", "unknown ca",
                         "peer name", "not in peer certificate", "alert")
#: The connection or the handshake broke off before any certificate was judged (a node
#: still starting, or many handshakes at once): retried until the deadline.
_TRANSIENT_MARKERS = ("connection refused", "failed to connect", "connect failed",
                      "socket closed", "connection reset", "name resolution",
                      "handshake read failed", "handshake write failed", "endpoint closing",
                      "broken pipe", "end of file", "this node is busy")


def status_code_for(exc: InvisibleError) -> grpc.StatusCode:
    for kind, code in _TO_CODE:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def is_verification_failure(error: grpc.RpcError) -> bool:
    """A TLS peer's certificate was refused (final)."""
    details = (error.details() or "").lower()  # type: ignore[attr-defined]
    return error.code() == grpc.StatusCode.UNAVAILABLE and any(  # type: ignore[attr-defined]
        m in details for m in _VERIFICATION_MARKERS
    )


def is_transient_failure(error: grpc.RpcError) -> bool:
    """The connection or the TLS handshake broke off before a certificate was judged."""
    details = (error.details() or "").lower()  # type: ignore[attr-defined]
    return (error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            and not is_verification_failure(error)
            and any(m in details for m in _TRANSIENT_MARKERS))


def domain_error(error: grpc.RpcError, party_id: str, what: str) -> InvisibleError:
    """The domain error for a failed call to a party, naming the party."""
    code = error.code()  # type: ignore[attr-defined]
    details = error.details() or code.name  # type: ignore[attr-defined]
    if is_verification_failure(error):
        return PeerAuthenticationError(
            party_id, f"{what}: the TLS handshake failed verifying a certificate (not from the "
            f"federation's CA, or not issued to '{party_id}' in the expected role)"
        )
    if is_transient_failure(error) and "handshake" in details.lower():
        return PartyUnavailableError(party_id, f"{what}: the TLS handshake did not complete "
                                     f"before the deadline (it broke off: {details})")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PartyUnavailableError(party_id, f"{what}: no answer before the deadline")
    if code == grpc.StatusCode.UNAVAILABLE:
        return PartyUnavailableError(party_id, f"{what}: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return MessageTooLargeError(f"party '{party_id}' refused {what}: {details}")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PolicyError(f"party '{party_id}' refused {what}: {details}")
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
        return ConfigError(f"party '{party_id}' refused {what}: {details}")
    return ProtocolError(f"party '{party_id}' failed {what}: {details}")
