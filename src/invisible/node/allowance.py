"""How often a caller may do something: a token bucket per caller (refused requests, chain
proofs asked for and sent)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Allowance:
    """A token bucket per caller: `burst` at most, refilled at `per_s` a second."""

    def __init__(self, burst: int, per_s: float, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        self.burst, self.per_s, self._clock = burst, per_s, clock
        self._left: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when)
        self._lock = threading.Lock()

    def _tokens(self, who: str) -> float:
        tokens, when = self._left.get(who, (float(self.burst), self._clock()))
        return min(float(self.burst), tokens + (self._clock() - when) * self.per_s)

    def allows(self, who: str) -> bool:
        with self._lock:
            return self._tokens(who) >= 1.0

    def spend(self, who: str) -> None:
        with self._lock:
            self._spend(who)

    def take(self, who: str) -> bool:
        """Spend one token if there is one, in one step; whether there was."""
        with self._lock:
            if self._tokens(who) < 1.0:
                return False
            self._spend(who)
            return True

    def _spend(self, who: str) -> None:
        self._left[who] = (self._tokens(who) - 1.0, self._clock())
        if len(self._left) > 10_000:  # callers full again are forgotten
            self._left = {w: v for w, v in self._left.items() if self._tokens(w) < self.burst}
