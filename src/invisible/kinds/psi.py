"""The `psi` job kind: parties find their common ids and keep the rows as an alignment.

Each party contributes an id column (integers or strings) of one of its
datasets; the protocol is :mod:`invisible.protocols.psi` (ECDH over
ristretto255). Every party ends with its own rows of the intersection of
all parties' ids, kept at its node as an alignment (:mod:`invisible.kinds.
alignments`) under a name, for later jobs; nothing leaves the nodes but,
when the job declares it (`release_size`) and every policy lets it go to
the requester, the intersection's size.

The intersection is a release of data, so:

- it is checked against k at every party after the protocol: if it holds
  fewer rows than any party's `min_rows`, every party refuses the job alike
  (one bit, through :mod:`invisible.protocols.bound_check`), charged, saying
  nothing of how small it is, and no alignment is kept;
- its size is recorded in every party's own ledger (an `intersection`
  entry), never in a receipt unless released;
- duplicate ids in a party's column refuse the job when it runs (a data
  check, charged), without a count;
- quota: a policy can allow `psi` to a requester a few times a day per
  dataset (`jobs_per_day` in an allow rule); two intersections with S and S
  plus one id tell whether that person is a customer (a differencing pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.alignments import check_name, make_alignment
from invisible.kinds.base import (
    Datasets,
    DataUse,
    DeclaredUse,
    JobContext,
    JobKind,
    JobOutcome,
    refuse_alike,
)
from invisible.kinds.params import Inputs, Params, param
from invisible.kinds.results import Result, Table
from invisible.metering.entries import canonical_json
from invisible.metering.policy import DEFAULT_ALIGNMENT_DAYS, DEFAULT_MIN_ROWS
from invisible.protocols.psi import psi

#: The rule of an intersection refused for holding fewer rows than a party's k.
K_RULE = "k-threshold"


@dataclass(frozen=True, kw_only=True)
class PsiParams(Params["PsiResult"]):
    KIND: ClassVar[str] = "psi"

    inputs: Inputs = param("per party, the dataset and its id column (integers or strings)",
                           example={"bank": {"dataset": "customers", "column": "customer_id"},
                                    "hospital": {"dataset": "customers", "column": "patient_id"},
                                    "telco": {"dataset": "customers",
                                              "column": "subscriber_id"}})
    alignment: str | None = param("the name later jobs use for the result (default: the job "
                                  "id)", default=None, example="bank-telco-2026-11")
    release_size: bool = param("tell the requester how many ids are in common (every policy "
                               "must let outputs go to the requester)", default=False)

    def job_parties(self, available: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self.inputs)

    def check(self, parties: tuple[str, ...]) -> None:
        if set(self.inputs) != set(parties):
            raise ConfigError(f"psi: 'inputs' must name a dataset and id column for every "
                              f"party of the job ({', '.join(parties)}) and no other")
        if len(parties) < 2:
            raise ConfigError("psi needs at least two parties")
        if self.alignment is not None:
            check_name(self.alignment)

    def domain(self, job_id: str) -> bytes:
        """What the ids are hashed with: the job and every party's input, in job order."""
        return canonical_json({"job": job_id, "inputs": {
            p: [r.dataset, r.column] for p, r in self.inputs.items()}})


@dataclass(repr=False)
class PsiResult(Result):
    #: The name the parties keep their rows under.
    alignment: str
    #: The intersection's size, when the job released it to the requester.
    size: int | None

    def table(self) -> Table:
        return Table(("alignment", "ids in common"),
                     [(self.alignment, "not released" if self.size is None else self.size)])

    def facts(self) -> dict[str, Any]:
        return {"alignment": self.alignment, "size": self.size}

    def notes(self) -> list[str]:
        return [f"each party keeps its own rows of the intersection as alignment "
                f"'{self.alignment}'; they never leave the nodes"]


class PsiKind(JobKind[PsiParams, PsiResult]):
    name = "psi"
    params_type = PsiParams
    summary = ("private set intersection of id columns (ECDH over ristretto255); each party "
               "keeps its rows as a named alignment, the requester learns at most the size")

    def declare(self, params: PsiParams, party_id: str) -> DeclaredUse:
        ref = params.inputs[party_id]
        # Without a released size nothing leaves this node: the rows stay here.
        return DeclaredUse(ref.dataset, (ref.column,),
                           None if params.release_size else party_id)

    def plan(self, params: PsiParams, party_id: str, datasets: Datasets) -> DataUse:
        ref = params.inputs[party_id]
        column = datasets.get(ref.dataset).column(ref.column)
        if column.dtype.kind not in "iU":
            raise ConfigError(f"psi: column '{ref.column}' of dataset '{ref.dataset}' is "
                              "neither an integer nor a string column")
        rows = int(column.shape[0])
        duplicates = rows != int(np.unique(column).size)
        return DataUse(rows, None, "the id column holds duplicate ids" if duplicates else None)

    def run(self, params: PsiParams, context: JobContext) -> JobOutcome:
        me = context.channel.party_id
        name = params.alignment or context.spec.job_id
        store = context.alignments
        if store is None or store.exists(name):  # a name is used once per node
            raise ConfigError(f"psi: an alignment named '{name}' exists on party '{me}'")
        ref = params.inputs[me]
        column = context.datasets.get(ref.dataset).column(ref.column)
        ids = column.tolist()
        result = psi(context.channel, ids, params.domain(context.spec.job_id), context.rng)
        policy = context.policy
        k = policy.min_rows if policy is not None else DEFAULT_MIN_ROWS
        refuse_alike(context, context.spec.parties, result.size < k, K_RULE,
                     "the intersection holds fewer rows than the k (min_rows) of one or more "
                     "parties' policies")
        days = policy.alignment_days if policy is not None else DEFAULT_ALIGNMENT_DAYS
        store.save(make_alignment(name, context.spec.job_id, ref.dataset, ref.column,
                                  context.spec.parties, context.requester, result.rows, days,
                                  size_released=params.release_size, ids=column))
        output: dict[str, Any] = {"alignment": name}
        if params.release_size:
            output["size"] = result.size
        return JobOutcome(rows_used=len(ids), output=output,
                          recipient=None if params.release_size else me,
                          notes={"intersection": {"alignment": name, "size": result.size}})

    def finish(self, params: PsiParams, job: JobResult) -> PsiResult:
        outputs = job.outputs
        names = {outputs[p].get("alignment") for p in job.parties}
        sizes = {outputs[p].get("size") for p in job.parties}
        if len(names) != 1 or len(sizes) != 1:
            raise ProtocolError("psi: the parties report different alignments or sizes")
        size = sizes.pop()
        return PsiResult(job, str(names.pop()), None if size is None else int(size))
