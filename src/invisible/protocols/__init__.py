"""Multi-party protocols, written against the abstract :class:`Channel` only."""
