"""The `secure_sum` job kind: add a numeric column across parties by pairwise masking.

What is summed, per party: the column's total (a vector of 1), per-category
totals (a vector of `categories`, by an integer column in [0, categories)),
or the column itself as a vector of `length` (e.g. model weights).

At each node (``plan`` and ``run``): before anything is encoded, parties x
max_rows x B x 2^f < 2^63 (parties x B x 2^f elementwise) is checked from
the declared parameters alone, so no sum can wrap; a value outside the
bound refuses the job, never wraps. The node then runs
:func:`invisible.protocols.secure_sum.secure_sum` and releases one masked
vector to the requester, or, when a party is the recipient, keeps the total
on that party's disk. Errors name the dataset, column and rule, never a value.

At the coordinator (``finish``): the masked vectors are added in the ring
(the masks cancel) and only the total is decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from invisible.crypto.fixedpoint import (
    DEFAULT_FRACTIONAL_BITS,
    BoundError,
    check_sum_capacity,
    decode,
    encode,
)
from invisible.crypto.sharing import RING_DTYPE, reconstruct
from invisible.errors import ConfigError, PolicyError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.base import Datasets, DataUse, JobContext, JobKind, JobOutcome
from invisible.kinds.params import Inputs, Params, param
from invisible.kinds.results import Result, Table, decimals_for
from invisible.protocols.secure_sum import secure_sum

RELEASED_ARRAY = "masked_input"
R = TypeVar("R")
DEFAULT_MAX_ROWS = 1 << 20


@dataclass(frozen=True, kw_only=True)
class SumParams(Params[R]):
    """What every sum declares: its inputs, their public bounds, and its shape."""

    inputs: Inputs = param("per party, the dataset and numeric column it adds",
                           example={"bank": {"dataset": "customers", "column": "monthly_spend"}})
    bound: float = param("public bound B on every |value| (a value beyond it refuses the job)",
                         gt=0, example=100000.0)
    max_rows: int = param("public bound on each party's rows", default=DEFAULT_MAX_ROWS, ge=1)
    fractional_bits: int = param("fixed-point resolution: values are rounded to 2^-f",
                                 default=DEFAULT_FRACTIONAL_BITS, ge=0, le=40)
    group_by: str | None = param("an integer column in [0, categories): one total per category",
                                 default=None, example="district")
    categories: int | None = param("how many categories 'group_by' has", default=None, ge=1,
                                    example=8)
    elementwise: bool = param("add the column itself as a vector of 'length' (e.g. weights)",
                              default=False)
    length: int | None = param("the vector's length, with 'elementwise'", default=None, ge=1,
                                example=10)

    @property
    def vector_length(self) -> int:
        if self.elementwise:
            return int(self.length or 0)
        return int(self.categories or 0) if self.group_by else 1

    def job_parties(self, available: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self.inputs)

    def check(self, parties: tuple[str, ...]) -> None:
        kind = self.KIND
        if set(self.inputs) != set(parties):
            raise ConfigError(f"{kind}: 'inputs' must name a dataset and column for every party "
                              f"of the job ({', '.join(parties)}) and no other")
        if len(parties) < 2:
            raise ConfigError(f"{kind} needs at least two parties")
        if self.group_by and self.elementwise:
            raise ConfigError(f"{kind}: choose 'group_by' or 'elementwise', not both")
        if bool(self.group_by) != bool(self.categories):
            raise ConfigError(f"{kind}: 'group_by' and 'categories' (how many) go together")
        if self.elementwise != bool(self.length):
            raise ConfigError(f"{kind}: 'elementwise' and 'length' (the vector's length) go "
                              "together")
        terms = len(parties) * (1 if self.elementwise else self.max_rows)
        try:
            check_sum_capacity(self.bound, terms, self.fractional_bits)
        except BoundError as exc:
            raise ConfigError(f"{kind}: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class SecureSumParams(SumParams["SecureSumResult"]):
    KIND: ClassVar[str] = "secure_sum"

    recipient: str | None = param("a party that receives the total instead of the requester",
                                  default=None, example="bank")

    def check(self, parties: tuple[str, ...]) -> None:
        super().check(parties)
        if self.recipient is not None and self.recipient not in parties:
            raise ConfigError(f"{self.KIND}: recipient '{self.recipient}' is not a party of the "
                              "job")


def local_vector(params: SumParams[Any], party: str, datasets: Datasets,
                 ) -> tuple[np.ndarray, int]:
    """This party's input vector in the ring, and the rows it used."""
    ref = params.inputs[party]
    dataset = datasets.get(ref.dataset)
    where = f"column '{ref.column}' of dataset '{ref.dataset}'"
    column = dataset.column(ref.column)
    if column.dtype.kind not in "if":
        raise ConfigError(f"{params.KIND}: {where} is not numeric")
    rows = int(column.shape[0])
    if params.elementwise:
        if rows != params.length:
            raise ConfigError(f"{params.KIND}: {where} has {rows} rows, the job declares "
                              f"length {params.length}")
    elif rows > params.max_rows:
        raise PolicyError(f"{params.KIND}: {where} has more rows than the job's max_rows")
    try:
        encoded = encode(column, params.bound, params.fractional_bits)
    except BoundError:
        raise PolicyError(f"{params.KIND}: {where} holds values outside the declared bound "
                          f"{params.bound:g}") from None
    if params.elementwise:
        return encoded, rows
    if params.group_by is None:
        return np.array([encoded.sum(dtype=RING_DTYPE)], dtype=RING_DTYPE), rows
    groups = dataset.column(params.group_by)  # checked by plan_sum
    totals = np.zeros(int(params.categories or 0), dtype=RING_DTYPE)
    np.add.at(totals, groups, encoded)
    return totals, rows


def plan_sum(params: SumParams[Any], party_id: str, datasets: Datasets,
             recipient: str | None) -> DataUse:
    """The data a sum of these parameters uses at `party_id` (shared with paillier_sum)."""
    ref = params.inputs[party_id]
    dataset = datasets.get(ref.dataset)
    rows = int(dataset.column(ref.column).shape[0])
    columns: tuple[str, ...] = (ref.column,)
    if params.elementwise:
        smallest = 1  # every element is one row's value
    elif params.group_by:
        groups = dataset.column(params.group_by)
        columns += (params.group_by,)
        categories = int(params.categories or 0)
        if groups.dtype.kind != "i" or (rows and (groups.min() < 0 or groups.max() >= categories)):
            raise ConfigError(f"{params.KIND}: group column '{params.group_by}' must hold "
                              f"integers in [0, {categories})")
        smallest = int(np.bincount(groups, minlength=categories).min()) if rows else 0
    else:
        smallest = rows
    return DataUse(ref.dataset, columns, rows, smallest, recipient)


@dataclass(repr=False)
class SecureSumResult(Result):
    #: The decoded totals (length 1 for a column total), or None if a party received them.
    total: np.ndarray | None
    #: Who received the total: the requester's id, or the recipient party's.
    recipient: str
    fractional_bits: int = DEFAULT_FRACTIONAL_BITS
    group_by: str | None = None
    elementwise: bool = False
    #: For a sum by Paillier: the party that decrypted the total (and so learned it too).
    key_holder: str | None = None

    @property
    def value(self) -> float:
        """The total of a single-column sum."""
        if self.total is None:
            raise ProtocolError(f"the total went to party '{self.recipient}', not to the "
                                "requester")
        if self.group_by or self.elementwise:
            raise ProtocolError(f"this sum has {self.total.size} totals "
                                f"({'per ' + repr(self.group_by) if self.group_by else 'a vector'})"
                                "; use .by_category, .total or .to_frame()")
        return float(self.total[0])

    @property
    def by_category(self) -> dict[int, float]:
        """Per-category totals, by category (a `group_by` sum)."""
        if self.total is None or not self.group_by:
            raise ProtocolError("this result holds no per-category totals")
        return {i: float(v) for i, v in enumerate(self.total)}

    def table(self) -> Table:
        decimals = decimals_for(self.fractional_bits)
        if self.total is None:
            return Table(("total", "received by"), [("kept at the recipient", self.recipient)])
        if self.group_by:
            return Table((self.group_by, "total"),
                         [(i, float(v)) for i, v in enumerate(self.total)], decimals)
        if self.elementwise:
            return Table(("index", "total"), [(i, float(v)) for i, v in enumerate(self.total)],
                         decimals)
        return Table(("total",), [(float(self.total[0]),)], decimals)

    def facts(self) -> dict[str, Any]:
        return {"recipient": self.recipient, "fractional_bits": self.fractional_bits,
                "key_holder": self.key_holder,
                "total": None if self.total is None else self.total.tolist()}

    def notes(self) -> list[str]:
        if self.total is None:
            return [f"the total went to party '{self.recipient}', which keeps it on its own "
                    "disk; the requester received nothing"]
        notes = [f"shown to the job's fixed-point resolution, 2^-{self.fractional_bits}"]
        if self.key_holder:
            notes.append(f"decrypted by the key holder '{self.key_holder}', which learned the "
                         "total too")
        return notes


class SecureSumKind(JobKind[SecureSumParams, SecureSumResult]):
    name = "secure_sum"
    params_type = SecureSumParams
    summary = ("adds a numeric column across parties (a total, per-category totals, or a "
               "vector); only the recipient learns the sum")

    def plan(self, params: SecureSumParams, party_id: str, datasets: Datasets) -> DataUse:
        return plan_sum(params, party_id, datasets, params.recipient)

    def run(self, params: SecureSumParams, context: JobContext) -> JobOutcome:
        me = context.channel.party_id
        vector, rows = local_vector(params, me, context.datasets)
        result = secure_sum(context.channel, vector, params.recipient)
        outcome = JobOutcome(rows_used=rows, values_opened=result.values_opened,
                             recipient=params.recipient)
        if result.released is not None:
            outcome.arrays[RELEASED_ARRAY] = result.released
        outcome.output = {"vector_length": params.vector_length,
                          "fractional_bits": params.fractional_bits}
        if result.total is not None:
            path = _keep_party_total(context, decode(result.total, params.fractional_bits).tolist())
            outcome.output["delivered_to"] = f"{me}:{path.name}"
        return outcome

    def finish(self, params: SecureSumParams, job: JobResult) -> SecureSumResult:
        total: np.ndarray | None = None
        if params.recipient is None:
            masked = [job.arrays.get(p, {}).get(RELEASED_ARRAY) for p in job.parties]
            if any(m is None or m.dtype != RING_DTYPE or m.shape != (params.vector_length,)
                   for m in masked):
                raise ProtocolError("a party released no masked vector of the expected shape")
            total = decode(reconstruct([m for m in masked if m is not None]),
                           params.fractional_bits)
        requester = job.requester or "requester"
        return SecureSumResult(job, total, params.recipient or requester, params.fractional_bits,
                               params.group_by, params.elementwise)


def _keep_party_total(context: JobContext, total: list[float]) -> Path:
    """Keep a total addressed to this party on this party's own disk, never releasing it."""
    context.results_dir.mkdir(parents=True, exist_ok=True)
    path = context.results_dir / f"{context.spec.job_id}.json"
    path.write_text(json.dumps({"job_id": context.spec.job_id, "kind": context.spec.kind,
                                "total": total}))
    return path
