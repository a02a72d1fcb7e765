"""The `connectivity` job kind: every pair of parties proves mutual-TLS reachability.

Each pair agrees on a fresh X25519 secret over the job's channel and
confirms it (see :mod:`invisible.protocols.connectivity`). Uses no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from invisible.errors import ConfigError
from invisible.jobspec import JobResult
from invisible.kinds.base import JobContext, JobKind, JobOutcome, UsesNoData
from invisible.kinds.params import Params
from invisible.kinds.results import Result, Table
from invisible.protocols.connectivity import run_connectivity_check


@dataclass(frozen=True, kw_only=True)
class ConnectivityParams(Params["ConnectivityResult"]):
    KIND: ClassVar[str] = "connectivity"

    def check(self, parties: tuple[str, ...]) -> None:
        if len(parties) < 2:
            raise ConfigError("connectivity: a job needs at least two parties")


@dataclass(repr=False)
class ConnectivityResult(Result):
    #: Per party, the peers it agreed a secret with.
    peers_confirmed: dict[str, list[str]]
    #: Per party, how long its checks took.
    party_seconds: dict[str, float]

    @property
    def ok(self) -> bool:
        """Every party confirmed every other party."""
        parties = set(self.job.parties)
        return all(set(peers) == parties - {p} for p, peers in self.peers_confirmed.items())

    def table(self) -> Table:
        return Table(("party", "peers confirmed", "ms"),
                     [(p, sorted(peers), round(self.party_seconds[p] * 1000, 1))
                      for p, peers in self.peers_confirmed.items()], decimals=1)

    def facts(self) -> dict[str, Any]:
        return {"ok": self.ok}

    def notes(self) -> list[str]:
        return ["every pair agreed on a fresh X25519 secret" if self.ok
                else "some pairs did not confirm each other"]


class ConnectivityKind(UsesNoData, JobKind[ConnectivityParams, ConnectivityResult]):
    name = "connectivity"
    params_type = ConnectivityParams
    summary = ("every pair of parties proves mutual-TLS reachability and agrees on a fresh "
               "X25519 secret; uses no data")

    def run(self, params: ConnectivityParams, context: JobContext) -> JobOutcome:
        result = run_connectivity_check(context.channel)
        return JobOutcome(output={"peers_confirmed": list(result.peers_confirmed),
                                  "seconds": round(result.seconds, 6)})

    def finish(self, params: ConnectivityParams, job: JobResult) -> ConnectivityResult:
        outputs = job.outputs
        return ConnectivityResult(
            job, {p: list(outputs[p].get("peers_confirmed", [])) for p in job.parties},
            {p: float(outputs[p].get("seconds", 0.0)) for p in job.parties})
