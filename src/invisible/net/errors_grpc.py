"""One place that maps domain errors to gRPC status codes and back."""

from __future__ import annotations

import json

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
from invisible.text import printable

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
                         "certificate required", "peer name", "not in peer certificate")
#: The connection or the handshake broke off before any certificate was judged (a node
#: still starting, or many handshakes at once): retried until the deadline.
_TRANSIENT_MARKERS = ("connection refused", "failed to connect", "connect failed",
                      "socket closed", "connection reset", "name resolution",
                      "handshake read failed", "handshake write failed", "endpoint closing",
                      "broken pipe", "end of file", "this node is busy")


#: Trailing metadata of a refused call: the node's signed entries recording the refusal.
RECEIPTS_METADATA = "invisible-receipts-bin"


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
    """The domain error for a failed call to a party, naming the party, with the signed
    entries the party recorded for it (its receipts), if it sent any."""
    found = _domain_error(error, party_id, what)
    found.receipts = _receipts(error)
    return found


def _receipts(error: grpc.RpcError) -> tuple[dict[str, object], ...]:
    trailing = getattr(error, "trailing_metadata", lambda: None)() or ()
    for key, value in trailing:
        if key == RECEIPTS_METADATA:
            try:
                receipts = json.loads(value)
            except (ValueError, TypeError):
                return ()
            if isinstance(receipts, list) and all(isinstance(r, dict) for r in receipts):
                return tuple(receipts)
    return ()


def _domain_error(error: grpc.RpcError, party_id: str, what: str) -> InvisibleError:
    code = error.code()  # type: ignore[attr-defined]
    details = error.details() or code.name  # type: ignore[attr-defined]
    if is_verification_failure(error):
        return PeerAuthenticationError(
            party_id, f"{what}: the TLS handshake failed verifying a certificate (not from the "
            f"federation's CA, or not issued to '{party_id}' in the expected role; gRPC said: "
            f"{printable(details, 300)})"
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
