"""What a job kind is: validate a job at a node, then run it over the job's channel.

A kind validates a job's parameters against the node's datasets before
anything runs, then runs its protocol and returns only what the job
releases to the requester.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from invisible.crypto.prg import Prg
from invisible.net.jobs_api import JobSpec
from invisible.net.pki import Identity
from invisible.node.datasets import DatasetRegistry
from invisible.protocols.channel import Channel


@dataclass
class JobContext:
    spec: JobSpec
    requester: Identity
    channel: Channel
    datasets: DatasetRegistry
    rng: Prg
    #: Where outputs addressed to this party itself are written (never released).
    results_dir: Path


@dataclass
class JobOutcome:
    rows_used: int = 0
    values_opened: int = 0
    output: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    #: Every explicit opening the party took part in: {"what", "to", "values"} each.
    openings: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class DataUse:
    """What a job will do with this party's data, known before it runs (for the policy)."""

    dataset: str
    columns: tuple[str, ...]
    rows: int
    smallest_cell: int | None
    recipient: str | None


class JobKind(Protocol):
    name: str

    def plan(self, spec: JobSpec, party_id: str, datasets: DatasetRegistry) -> DataUse | None:
        """Validate the job here and say what data it uses (None: none); raises if invalid."""

    def run(self, context: JobContext) -> JobOutcome: ...
