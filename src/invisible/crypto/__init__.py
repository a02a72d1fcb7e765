"""Pure math, no I/O: the ring, sharing, the PRG and key agreement."""
