"""What every operation of the engine needs, passed in explicitly (no global state)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel


@dataclass(frozen=True)
class Opening:
    """One explicit reveal: what was opened, to whom, how many values."""

    what: str
    to: tuple[str, ...]
    values: int


@dataclass
class OpenRecord:
    """Every value a party helped open during a job, for the job record and the ledger."""

    openings: list[Opening] = field(default_factory=list)

    def add(self, what: str, to: Sequence[str], values: int) -> None:
        self.openings.append(Opening(what, tuple(to), values))

    @property
    def values(self) -> int:
        return sum(o.values for o in self.openings)

    def listed(self) -> list[dict[str, object]]:
        """The openings as the job's output and ledger entry list them."""
        return [{"what": o.what, "to": list(o.to), "values": o.values} for o in self.openings]

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for opening in self.openings:
            out[opening.what] = out.get(opening.what, 0) + opening.values
        return out


@dataclass
class MpcContext:
    """One computing party's view: its channel, the computing parties, the dealer.

    The dealer is on the channel but is never a computing party: it never
    receives a share of a value or an opened value.
    """

    channel: Channel
    parties: tuple[str, ...]
    dealer: str
    fractional_bits: int = 16
    record: OpenRecord = field(default_factory=OpenRecord)
    _steps: int = 0

    def __post_init__(self) -> None:
        if self.dealer in self.parties:
            raise ProtocolError("the dealer cannot be a computing party")
        if self.channel.party_id not in self.parties:
            raise ProtocolError(f"'{self.channel.party_id}' is not a computing party")
        if len(self.parties) < 2:
            raise ProtocolError("shared arithmetic needs at least two computing parties")

    @property
    def me(self) -> str:
        return self.channel.party_id

    @property
    def index(self) -> int:
        return self.parties.index(self.me)

    @property
    def is_leader(self) -> bool:
        return self.index == 0

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(p for p in self.parties if p != self.me)

    def next_step(self, name: str) -> str:
        """A fresh step tag: every party runs the same program, so tags agree."""
        self._steps += 1
        return f"mpc/{self._steps}/{name}"
