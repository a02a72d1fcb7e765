"""What a job kind is: declared parameters, a plan, a run at each node, a finish.

A kind lives in one module of this package and holds everything specific
to it:

- its parameters (:class:`invisible.kinds.params.Params`, declared once);
- ``declare``: at each node, from the parameters alone, which dataset,
  columns and recipient the job uses there: the policy is checked against
  this before anything reads data;
- ``plan``: for an allowed job, what the data says (rows, the smallest
  released cell, a data-dependent problem), charged like a job;
- ``run``: at each node, the protocol over the job's channel, returning what
  the node releases (:class:`JobOutcome`);
- ``finish``: at the coordinator, the parties' released outputs decoded into
  the kind's typed result (a :class:`invisible.kinds.results.Result`).

Kinds import no transport, node or coordinator: a node's datasets are seen
through the small :class:`Datasets` protocol, the channel through
:class:`invisible.protocols.channel.Channel`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from invisible.crypto.prg import Prg
from invisible.jobspec import JobResult, JobSpec
from invisible.kinds.alignments import AlignmentStore
from invisible.kinds.models import ModelStore
from invisible.kinds.params import Params
from invisible.metering.policy import DatasetPolicy, Refusal
from invisible.protocols.bound_check import any_party_flagged
from invisible.protocols.channel import Channel

P = TypeVar("P", bound=Params[Any])
R = TypeVar("R")


class Dataset(Protocol):
    def column(self, name: str) -> np.ndarray: ...


class Datasets(Protocol):
    """A node's datasets, by id (raises ConfigError naming an unknown one)."""

    def get(self, dataset_id: str) -> Dataset: ...


@dataclass(frozen=True)
class DeclaredUse:
    """What a job says it will use at this party, read from its parameters alone.

    The node's policy (requester, kind, columns, recipient) is checked against
    this before anything reads data, so a refusal can depend on nothing but
    the request and the policy.
    """

    dataset: str
    columns: tuple[str, ...]
    #: Who receives what this party releases: a party id, or None for the requester.
    recipient: str | None
    #: With a recipient party: whether the requester receives the outputs too.
    requester_too: bool = False
    #: Its outputs combine this party's data with one other party's only, and that party
    #: learns them: refused unless the policy allows two_party.
    two_party: bool = False
    #: The parties whose data its outputs combine with this party's, where results over
    #: different groups, differenced, would give one party's contribution: every job of the
    #: kind on the dataset must keep one group (see DatasetPolicy.group).
    group: tuple[str, ...] | None = None
    #: The privacy cost it declares, in nano-rho (0: it adds no noise); charged to the
    #: dataset's privacy budgets.
    rho: int = 0


@dataclass(frozen=True)
class DataUse:
    """What the data says about an allowed job, measured after the policy allowed it.

    `problem` is a data-dependent reason the job cannot run here (rows over
    the declared maximum, a group column out of range): it is charged like a
    job and says nothing about values or counts.
    """

    rows: int
    #: Rows in the smallest cell the job would release (None: releases no aggregate).
    smallest_cell: int | None
    problem: str | None = None


@dataclass
class JobContext:
    spec: JobSpec
    #: The party id of the coordinator identity that requested the job.
    requester: str
    channel: Channel
    datasets: Datasets
    rng: Prg
    #: Where outputs addressed to this party itself are written (never released).
    results_dir: Path
    #: Run the bound check (some party's policy refuses values beyond the bound).
    check_bounds: bool = False
    #: The policy of the dataset the job uses here (None: it uses none).
    policy: DatasetPolicy | None = None
    #: This node's alignments (the rows of set intersections), by name.
    alignments: AlignmentStore | None = None
    #: This node's trained models, by name.
    models: ModelStore | None = None
    #: Tell the requester how far the job is: (steps done, steps in all); public facts of
    #: the schedule, never of the data.
    progress: Callable[[int, int], None] | None = None

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


#: The rule of a job refused because a value lay beyond its bound where a policy refuses that.
OUT_OF_BOUND_RULE = "out-of-bound"


def check_bounds(context: JobContext, parties: Sequence[str], clipped: int) -> None:
    """Refuse the job at every data holder alike if one whose policy refuses values beyond
    the bound holds any (see :mod:`invisible.protocols.bound_check`): run before anything
    that depends on the data leaves this party. Every data holder learns that one bit."""
    if context.check_bounds:
        refuses = context.policy is not None and context.policy.refuses_out_of_bound
        refuse_alike(context, parties, refuses and clipped > 0,
                     OUT_OF_BOUND_RULE, "a value lies beyond the job's declared bound at one or "
                     "more parties whose policy refuses such values rather than clipping them")


def refuse_alike(context: JobContext, parties: Sequence[str], flagged: bool, rule: str,
                 detail: str, tag: str = "") -> None:
    """Refuse the job at every one of `parties` alike if any of them raises its flag: each
    learns that one bit and nothing of whose flag it was (the bound check's protocol; a job
    that runs it more than once gives each run its own `tag`)."""
    if any_party_flagged(context.channel, parties, flagged, context.rng, tag):
        refusal = Refusal(context.channel.party_id, rule, detail)
        refusal.alike = tuple(parties)
        raise refusal


@dataclass
class JobOutcome:
    """What a node's run of a job ends with: its use of data and what it releases."""

    rows_used: int = 0
    values_opened: int = 0
    #: Public facts about the run, released with the status (never data).
    output: dict[str, Any] = field(default_factory=dict)
    #: Arrays released to the requester.
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    #: Who learns this party's released outputs: a party id, or None for the requester.
    recipient: str | None = None
    #: Every explicit opening the party took part in: {"what", "to", "values"} each.
    openings: list[dict[str, Any]] = field(default_factory=list)
    #: Facts for this party's own ledger only, never a receipt: {event: body}.
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: How many of this party's values were clipped to the declared bound: recorded in
    #: this party's own ledger only, never released.
    clipped: int = 0
    #: Paillier ciphertexts this party encrypted, combined or decrypted (a bill's measure).
    ciphertext_ops: int = 0


class JobKind(ABC, Generic[P, R]):
    """One kind of joint job; see the module docstring."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    params_type: type[P]
    #: One line: what the job computes and who learns what.
    summary: ClassVar[str]
    #: Whether it bounds values (clipping them, or running :func:`check_bounds`).
    bounds_values: ClassVar[bool] = False

    def parse(self, spec: JobSpec) -> P:
        return self.params_type.parse(spec.params, spec.parties)

    @abstractmethod
    def declare(self, params: P, party_id: str) -> DeclaredUse | None:
        """What the job uses here, from its parameters alone (None: no data); no data is read."""

    @abstractmethod
    def plan(self, params: P, party_id: str, datasets: Datasets) -> DataUse | None:
        """For a job the policy allowed: rows and the smallest released cell here, and any
        data-dependent problem (None: no data). Raises ConfigError only for what the
        dataset's declaration shows (a missing or non-numeric column), never for values."""

    def traffic(self, params: P, party_id: str) -> int:
        """For a job that uses no data here: the bytes it may make this node move, which
        the node's policy caps (0: nothing worth a cap)."""
        return 0

    @abstractmethod
    def run(self, params: P, context: JobContext) -> JobOutcome:
        """This party's part of the job."""

    @abstractmethod
    def finish(self, params: P, job: JobResult) -> R:
        """At the coordinator: the released outputs as this kind's result."""


class UsesNoData:
    """Mixed into a kind that reads no data at any party (diagnostics): its jobs follow each
    node's own `[policy]`. Opting in is explicit; a kind that reads data must write its
    own `declare` and `plan`, or it cannot be instantiated."""

    def declare(self, params: Any, party_id: str) -> DeclaredUse | None:
        return None

    def plan(self, params: Any, party_id: str, datasets: Datasets) -> DataUse | None:
        return None
