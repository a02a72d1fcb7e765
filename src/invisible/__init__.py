"""invisible: data that is usable but invisible, controllable and measurable.

Institutions compute jointly on data that never leaves them in the clear:
additive secret sharing and Paillier encryption between party nodes that talk
mutual-TLS gRPC, each node authorising and metering every use of its data.

Layers, dependencies pointing downwards only (see the README):
``cli`` → ``jobs`` → ``node`` → ``net`` → ``protocols`` → ``crypto``.
"""

from invisible.errors import (
    ConfigError,
    InvisibleError,
    MessageTooLargeError,
    PartyUnavailableError,
    PeerAuthenticationError,
    PolicyError,
    ProtocolError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InvisibleError",
    "MessageTooLargeError",
    "PartyUnavailableError",
    "PeerAuthenticationError",
    "PolicyError",
    "ProtocolError",
    "__version__",
]
