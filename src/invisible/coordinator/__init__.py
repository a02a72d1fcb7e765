"""Joint jobs: the coordinator side (start on every party, gather, combine)."""
