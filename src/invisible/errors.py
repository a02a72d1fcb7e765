"""The project's one small exception hierarchy.

Every message names what was wrong (a file, a party id, a dataset, a rule)
and never carries a share, a key or a private value.
"""

from __future__ import annotations


class InvisibleError(Exception):
    """Base of every error this toolkit raises on purpose.

    `receipts`: the signed ledger entries that record this error at a node (a
    refusal's), which travel with it to the requester.
    """

    receipts: tuple[dict[str, object], ...] = ()


class ConfigError(InvisibleError):
    """A configuration file, certificate, key, dataset or column is missing or wrong."""


class PolicyError(InvisibleError):
    """A request is not allowed: wrong role, unknown requester, quota or threshold."""


class ProtocolError(InvisibleError):
    """A protocol run went wrong: unexpected message, bad parameters, a failed check."""


class JobAbortedError(ProtocolError):
    """A party of the job gave up on it, or the requester cancelled it: `by` names who."""

    def __init__(self, message: str, by: str) -> None:
        super().__init__(message)
        self.by = by


class MessageTooLargeError(ProtocolError):
    """A message declared or carried more bytes than the receiver's cap."""


class PartyUnavailableError(InvisibleError):
    """A party could not be reached, or did not answer, within the deadline."""

    def __init__(self, party_id: str, detail: str) -> None:
        super().__init__(f"party '{party_id}' is unavailable: {detail}")
        self.party_id = party_id


class NodeBusyError(PartyUnavailableError):
    """A node refused a call because the caller holds as many such calls as it may."""

    def __init__(self, detail: str) -> None:
        InvisibleError.__init__(self, detail)
        self.party_id = ""


class PeerAuthenticationError(PartyUnavailableError):
    """The TLS handshake with a party failed: untrusted CA, wrong identity or role."""

    def __init__(self, party_id: str, detail: str) -> None:
        InvisibleError.__init__(
            self, f"mutual TLS with party '{party_id}' was refused: {detail}"
        )
        self.party_id = party_id
