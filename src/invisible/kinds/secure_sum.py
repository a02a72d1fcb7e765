"""The `secure_sum` job kind: add a numeric column across parties by pairwise masking.

What is summed, per party: the column's total (a vector of 1), per-category
totals (a vector of `categories`, by an integer column in [0, categories)),
or the column itself as a vector of `length` (e.g. model weights).

At each node (``declare``, ``plan`` and ``run``): parties x max_rows x B x
2^f < 2^63 (parties x B x 2^f elementwise) is checked from the declared
parameters alone, so no sum can wrap; a value outside the bound is clipped
to it (never wrapped, never refused: a refusal would be an oracle). With `rho`
(differential privacy, not for `elementwise`), each node adds its own discrete Gaussian
noise to its vector, sigma = 2 x bound x 2^f / sqrt(2 rho) (one row's value replaced; the
row count is public), so that what is released is rho-zCDP for its rows whatever the
other parties do, and charges rho to its budgets (see
:mod:`invisible.metering.privacy`); the capacity check then includes the noise. The node then runs
:func:`invisible.protocols.secure_sum.secure_sum` and releases one masked
vector to the requester, or, when a party is the recipient, keeps the total
on that party's disk. Errors name the dataset, column and rule, never a value.

At the coordinator (``finish``): the masked vectors are added in the ring
(the masks cancel) and only the total is decoded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from invisible.crypto.fixedpoint import (
    DEFAULT_FRACTIONAL_BITS,
    BoundError,
    check_sum_capacity,
    decode,
    encode_clipped,
)
from invisible.crypto.noise import MAX_SIGMA, discrete_gaussian, magnitude_bound
from invisible.crypto.prg import Prg
from invisible.crypto.sharing import RING_DTYPE, reconstruct
from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.base import (
    Dataset,
    Datasets,
    DataUse,
    DeclaredUse,
    JobContext,
    JobKind,
    JobOutcome,
    check_bounds,
)
from invisible.kinds.params import Inputs, Params, param
from invisible.kinds.results import Result, Table, decimals_for
from invisible.metering.privacy import cost_units, describe, noise_sigma
from invisible.protocols.secure_sum import secure_sum

RELEASED_ARRAY = "masked_input"
R = TypeVar("R")
DEFAULT_MAX_ROWS = 1 << 20
#: Declared limits on sizes, so no parameter can make a node allocate without bound.
MAX_ROWS = 1 << 40
MAX_CATEGORIES = 1 << 20
MAX_LENGTH = 1 << 27


@dataclass(frozen=True, kw_only=True)
class SumParams(Params[R]):
    """What every sum declares: its inputs, their public bounds, and its shape."""

    inputs: Inputs = param("per party, the dataset and numeric column it adds",
                           example={"bank": {"dataset": "customers", "column": "monthly_spend"}})
    bound: float = param("public bound B on every |value| (values beyond it are clipped to it)",
                         gt=0, example=100000.0)
    max_rows: int = param("public bound on each party's rows", default=DEFAULT_MAX_ROWS, ge=1,
                          le=MAX_ROWS)
    fractional_bits: int = param("fixed-point resolution: values are rounded to 2^-f",
                                 default=DEFAULT_FRACTIONAL_BITS, ge=0, le=40)
    group_by: str | None = param("an integer column in [0, categories): one total per category",
                                 default=None, example="district")
    categories: int | None = param("how many categories 'group_by' has", default=None, ge=1,
                                    le=MAX_CATEGORIES, example=8)
    elementwise: bool = param("add the column itself as a vector of 'length' (e.g. weights)",
                              default=False)
    length: int | None = param("the vector's length, with 'elementwise'", default=None, ge=1,
                                le=MAX_LENGTH, example=10)

    rho: float | None = param("differential privacy: the cost (zCDP rho) each owner charges to "
                              "its budget; each adds discrete Gaussian noise for it to what it "
                              "contributes", default=None, gt=0, example=0.1)

    @property
    def sensitivity(self) -> int:
        """What one row's value, replaced by any other, changes a party's contribution by at
        most on the fixed-point grid, in L2: 2 x the bound (from -B to B in one category;
        moving a row between categories changes two totals by B each, sqrt(2) B). The row
        count is public (receipts show it), so rows are replaced, not added or removed."""
        return 2 * math.ceil(self.bound * 2.0**self.fractional_bits)

    @property
    def sigma(self) -> float | None:
        """The noise each party adds (grid units), or None without `rho`."""
        return None if self.rho is None else noise_sigma(self.rho, self.sensitivity)

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
        sigma = self.sigma
        if sigma is None:
            return
        if self.elementwise:
            raise ConfigError(f"{kind}: 'rho' adds noise to totals and per-category totals; "
                              "an elementwise vector has no rows to protect")
        if sigma > MAX_SIGMA:
            raise ConfigError(f"{kind}: 'rho' {self.rho:g} needs noise beyond 2^50 on the "
                              "grid; raise rho or lower the bound or the fractional bits")
        values = len(parties) * self.max_rows * self.bound * 2.0**self.fractional_bits
        if values + len(parties) * magnitude_bound(sigma) >= 2.0**63:
            raise ConfigError(f"{kind}: with the noise 'rho' {self.rho:g} needs, the sum could "
                              "reach 2^63; lower the bound, max_rows or the fractional bits")

    def declared_cost(self, declared: DeclaredUse) -> DeclaredUse:
        """`declared` with the privacy cost of this sum (none without `rho`)."""
        return declared if self.rho is None else replace(declared, rho=cost_units(self.rho))

    def noised(self, vector: np.ndarray) -> np.ndarray:
        """This party's vector with its own noise (the vector itself without `rho`): its
        noise alone makes what the sum releases rho-zCDP for its rows."""
        if self.sigma is None:
            return vector
        noise = discrete_gaussian(Prg.from_os(), self.sigma, vector.size)
        return vector + noise.view(RING_DTYPE)  # in the ring: two's complement

    def noise_sd(self, parties: int) -> float | None:
        """The standard deviation of each released total's noise (all parties'), in the
        column's units."""
        if self.sigma is None:
            return None
        return math.sqrt(parties) * self.sigma * 2.0**-self.fractional_bits


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
                 ) -> tuple[np.ndarray, int, int]:
    """This party's input vector in the ring, the rows it used and how many values were
    clipped to the declared bound (`plan_sum` checked the rows and groups beforehand)."""
    ref = params.inputs[party]
    dataset = datasets.get(ref.dataset)
    column = numeric_column(params.KIND, dataset, ref.dataset, ref.column)
    encoded, clipped = encode_clipped(column, params.bound, params.fractional_bits)
    rows = int(column.shape[0])
    if params.elementwise:
        return encoded, rows, clipped
    if params.group_by is None:
        return np.array([encoded.sum(dtype=RING_DTYPE)], dtype=RING_DTYPE), rows, clipped
    categories = int(params.categories or 0)
    groups = dataset.column(params.group_by)
    if params.rho is not None:  # rows outside [0, categories) add nothing (plan_sum)
        inside = (groups >= 0) & (groups < categories)
        groups, encoded = groups[inside], encoded[inside]
    totals = np.zeros(categories, dtype=RING_DTYPE)
    np.add.at(totals, groups, encoded)
    return totals, rows, clipped


def numeric_column(kind: str, dataset: Dataset, dataset_id: str, name: str) -> np.ndarray:
    """A column that the dataset's declaration says is numeric (a schema check, not data)."""
    column = dataset.column(name)
    if column.dtype.kind not in "if":
        raise ConfigError(f"{kind}: column '{name}' of dataset '{dataset_id}' is not numeric")
    return column


def declare_sum(params: SumParams[Any], party_id: str, recipient: str | None,
                requester_too: bool = False) -> DeclaredUse:
    """The dataset and columns a sum of these parameters uses at `party_id`, from the
    parameters alone (shared with paillier_sum)."""
    ref = params.inputs[party_id]
    columns = (ref.column,) + ((params.group_by,) if params.group_by else ())
    return DeclaredUse(ref.dataset, columns, recipient, requester_too)


def plan_sum(params: SumParams[Any], party_id: str, datasets: Datasets) -> DataUse:
    """Rows and the smallest released cell of an allowed sum here, and any data-dependent
    problem, in words that give no value or count (shared with paillier_sum)."""
    ref = params.inputs[party_id]
    dataset = datasets.get(ref.dataset)
    rows = int(numeric_column(params.KIND, dataset, ref.dataset, ref.column).shape[0])
    if params.elementwise:
        problem = None if rows == params.length else (
            f"column '{ref.column}' does not have the declared length")
        return DataUse(rows, 1, problem)  # every element is one row's value
    if rows > params.max_rows:
        return DataUse(rows, rows, f"dataset '{ref.dataset}' has more rows than the job's "
                                   "max_rows")
    if not params.group_by:
        return DataUse(rows, rows)
    groups = dataset.column(params.group_by)
    categories = int(params.categories or 0)
    if groups.dtype.kind != "i":
        raise ConfigError(f"{params.KIND}: group column '{params.group_by}' of dataset "
                          f"'{ref.dataset}' is not an integer column")
    if params.rho is not None:
        # With noise, nothing here may depend on what the rows hold: a refusal is an exact
        # answer no noise covers. Small categories are released noised (the noise is what
        # protects them; the k threshold applies to the dataset's rows, which are public),
        # and rows outside [0, categories) add nothing (`local_vector`).
        return DataUse(rows, rows)
    if rows and (groups.min() < 0 or groups.max() >= categories):
        return DataUse(rows, None, f"group column '{params.group_by}' does not hold integers "
                                   "in [0, categories)")
    return DataUse(rows, int(np.bincount(groups, minlength=categories).min()) if rows else 0)


@dataclass(repr=False, eq=False)
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
    #: With differential privacy: the standard deviation of each total's noise (the sum of
    #: every party's), in the column's units.
    noise_sd: float | None = None
    #: The privacy cost each owner charged (zCDP rho), with differential privacy.
    rho: float | None = None

    @property
    def value(self) -> float:
        """The total of a single-column sum."""
        if self.total is None:
            raise ProtocolError(f"the total went to party '{self.recipient}', not to the "
                                "requester")
        if self.group_by:
            raise ProtocolError(f"this sum has {self.total.size} totals (per "
                                f"{self.group_by!r}); use .by_category, .total or .to_frame()")
        if self.total.shape != (1,):
            raise ProtocolError(f"this sum is a vector of {self.total.size}; use .total or "
                                ".to_frame()")
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
                "key_holder": self.key_holder, "noise_sd": self.noise_sd, "rho": self.rho,
                "total": None if self.total is None else self.total.tolist()}

    def notes(self) -> list[str]:
        if self.total is None:
            return [f"the total went to party '{self.recipient}', which keeps it on its own "
                    "disk; the requester received nothing"]
        notes = [f"shown to the job's fixed-point resolution, 2^-{self.fractional_bits}"]
        if self.noise_sd is not None and self.rho is not None:
            notes.append(f"with differential privacy, {describe(cost_units(self.rho))} charged "
                         "by each owner: each total carries discrete Gaussian noise of standard "
                         f"deviation {self.noise_sd:.4g} (every party's)")
        if self.key_holder:
            notes.append(f"decrypted by the key holder '{self.key_holder}', which learned the "
                         "total too")
        return notes


class SecureSumKind(JobKind[SecureSumParams, SecureSumResult]):
    name = "secure_sum"
    bounds_values = True
    params_type = SecureSumParams
    summary = ("adds a numeric column across parties (a total, per-category totals, or a "
               "vector); only the recipient learns the sum")

    def declare(self, params: SecureSumParams, party_id: str) -> DeclaredUse:
        return params.declared_cost(declare_sum(params, party_id, params.recipient))

    def plan(self, params: SecureSumParams, party_id: str, datasets: Datasets) -> DataUse:
        return plan_sum(params, party_id, datasets)

    def run(self, params: SecureSumParams, context: JobContext) -> JobOutcome:
        me = context.channel.party_id
        vector, rows, clipped = local_vector(params, me, context.datasets)
        check_bounds(context, context.spec.parties, clipped)
        result = secure_sum(context.channel, params.noised(vector), params.recipient)
        outcome = JobOutcome(rows_used=rows, values_opened=result.values_opened,
                             recipient=params.recipient, clipped=clipped)
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
                               params.group_by, params.elementwise,
                               noise_sd=params.noise_sd(len(job.parties)), rho=params.rho)


def _keep_party_total(context: JobContext, total: list[float]) -> Path:
    """Keep a total addressed to this party on this party's own disk, never releasing it."""
    context.results_dir.mkdir(parents=True, exist_ok=True)
    path = context.results_dir / f"{context.spec.job_id}.json"
    path.write_text(json.dumps({"job_id": context.spec.job_id, "kind": context.spec.kind,
                                "total": total}))
    return path
