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

_HANDSHAKE_MARKERS = ("handshake", "ssl", "tls", "certificate", "verification", "tsi_")
_CONNECT_MARKERS = ("connection refused", "failed to connect", "connect failed",
                    "socket closed", "connection reset", "name resolution")


def status_code_for(exc: InvisibleError) -> grpc.StatusCode:
    for kind, code in _TO_CODE:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def is_handshake_failure(error: grpc.RpcError) -> bool:
    details = (error.details() or "").lower()  # type: ignore[attr-defined]
    return error.code() == grpc.StatusCode.UNAVAILABLE and any(  # type: ignore[attr-defined]
        m in details for m in _HANDSHAKE_MARKERS
    )


def is_connect_failure(error: grpc.RpcError) -> bool:
    details = (error.details() or "").lower()  # type: ignore[attr-defined]
    return error.code() == grpc.StatusCode.UNAVAILABLE and any(  # type: ignore[attr-defined]
        m in details for m in _CONNECT_MARKERS
    )


def domain_error(error: grpc.RpcError, party_id: str, what: str) -> InvisibleError:
    """The domain error for a failed call to a party, naming the party."""
    code = error.code()  # type: ignore[attr-defined]
    details = error.details() or code.name  # type: ignore[attr-defined]
    if is_handshake_failure(error):
        return PeerAuthenticationError(
            party_id, f"{what}: the TLS handshake failed (certificate not from the federation's "
            f"CA, or not issued to '{party_id}' in the expected role)"
        )
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
