"""Job kinds a party node can run, behind one small interface.

A kind validates a job's parameters against the node's datasets before
anything runs, then runs its protocol over the job's channel and returns
only what the job releases to the requester.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from invisible.crypto.prg import Prg
from invisible.errors import ConfigError
from invisible.net.jobs_api import JobSpec
from invisible.net.pki import Identity
from invisible.node.datasets import DatasetRegistry
from invisible.protocols.channel import Channel
from invisible.protocols.connectivity import run_connectivity_check


@dataclass
class JobContext:
    spec: JobSpec
    requester: Identity
    channel: Channel
    datasets: DatasetRegistry
    rng: Prg


@dataclass
class JobOutcome:
    rows_used: int = 0
    values_opened: int = 0
    output: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class JobKind(Protocol):
    name: str

    def validate(self, spec: JobSpec, datasets: DatasetRegistry) -> None:
        """Raise ConfigError or ProtocolError if this node cannot run the job."""

    def run(self, context: JobContext) -> JobOutcome: ...


class ConnectivityKind:
    """Every pair of parties proves mutual-TLS reachability and key agreement."""

    name = "connectivity"

    def validate(self, spec: JobSpec, datasets: DatasetRegistry) -> None:
        if spec.params:
            raise ConfigError("a connectivity job takes no parameters")
        if len(spec.parties) < 2:
            raise ConfigError("a connectivity job needs at least two parties")

    def run(self, context: JobContext) -> JobOutcome:
        result = run_connectivity_check(context.channel)
        return JobOutcome(output={
            "peers_confirmed": list(result.peers_confirmed),
            "seconds": round(result.seconds, 6),
        })


def default_kinds() -> dict[str, JobKind]:
    kinds: list[JobKind] = [ConnectivityKind()]
    return {kind.name: kind for kind in kinds}
