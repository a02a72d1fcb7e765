"""Text from outside (a requester, a peer, a file) made safe to show on one line."""

from __future__ import annotations


def printable(text: str, limit: int | None = None) -> str:
    """`text` with control characters escaped (a newline forges no log line), cut to
    `limit` characters if given."""
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit is None or len(safe) <= limit:
        return safe
    return safe[:limit - 3] + "..."
