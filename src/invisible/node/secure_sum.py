"""The `secure_sum` job kind: parameters, validation at each node, and the run.

Parameters (JSON object, the same for every party)::

    {"inputs": {"bank": {"dataset": "customers", "column": "monthly_spend"}, ...},
     "bound": 100000.0,          # declared |value| bound B, public
     "max_rows": 1000000,        # public bound on each party's rows
     "fractional_bits": 16,
     "group_by": "district", "categories": 8,   # optional: per-category totals
     "elementwise": false, "length": null,     # or: the column itself is the vector
     "recipient": null}          # a party id, or null for the requester

What is summed, per party: the column's total (a vector of 1), per-category
totals (a vector of `categories`, by an integer column in [0, categories)),
or the column itself as a vector of `length` (e.g. model weights).

Before anything is encoded the node checks that parties x max_rows x B x 2^f
< 2^63 (parties x B x 2^f for elementwise), so no sum can wrap; a value
outside the bound refuses the job, never wraps. Errors name the dataset,
column and rule, never a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from invisible.crypto.fixedpoint import (
    DEFAULT_FRACTIONAL_BITS,
    BoundError,
    check_sum_capacity,
    decode,
    encode,
)
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ConfigError, PolicyError
from invisible.net.jobs_api import JobSpec
from invisible.node.datasets import DatasetRegistry
from invisible.node.jobkind import DataUse, JobContext, JobOutcome
from invisible.protocols.secure_sum import secure_sum

KIND = "secure_sum"
RELEASED_ARRAY = "masked_input"
DEFAULT_MAX_ROWS = 1 << 20


@dataclass(frozen=True)
class InputRef:
    dataset: str
    column: str


def input_refs(inputs: Mapping[str, tuple[str, str] | InputRef]) -> dict[str, InputRef]:
    """{party: (dataset, column)} as InputRefs, in the caller's party order."""
    return {p: r if isinstance(r, InputRef) else InputRef(*r) for p, r in inputs.items()}


@dataclass(frozen=True)
class SecureSumParams:
    inputs: dict[str, InputRef]
    bound: float
    max_rows: int = DEFAULT_MAX_ROWS
    fractional_bits: int = DEFAULT_FRACTIONAL_BITS
    group_by: str | None = None
    categories: int | None = None
    elementwise: bool = False
    length: int | None = None
    recipient: str | None = None

    @property
    def vector_length(self) -> int:
        if self.elementwise:
            return int(self.length or 0)
        return int(self.categories or 0) if self.group_by else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": {p: {"dataset": r.dataset, "column": r.column} for p, r in self.inputs.items()},
            "bound": self.bound, "max_rows": self.max_rows,
            "fractional_bits": self.fractional_bits, "group_by": self.group_by,
            "categories": self.categories, "elementwise": self.elementwise,
            "length": self.length, "recipient": self.recipient,
        }

    @classmethod
    def from_json(cls, params: dict[str, Any], parties: tuple[str, ...]) -> SecureSumParams:
        """Parse and check everything that does not need the data itself."""
        known = {"inputs", "bound", "max_rows", "fractional_bits", "group_by", "categories",
                 "elementwise", "length", "recipient"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"secure_sum: unknown parameter(s) {', '.join(unknown)}")
        raw_inputs = params.get("inputs")
        if not isinstance(raw_inputs, dict) or set(raw_inputs) != set(parties):
            raise ConfigError("secure_sum: 'inputs' must name a dataset and column for every party")
        inputs = {}
        for party, ref in raw_inputs.items():
            if not (isinstance(ref, dict) and isinstance(ref.get("dataset"), str)
                    and isinstance(ref.get("column"), str)):
                raise ConfigError(f"secure_sum: input of party '{party}' needs 'dataset' and 'column'")
            inputs[party] = InputRef(ref["dataset"], ref["column"])
        bound = params.get("bound")
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ConfigError("secure_sum: 'bound' (the largest |value|) is required")
        parsed = cls(
            inputs=inputs, bound=float(bound),
            max_rows=_positive_int(params, "max_rows", DEFAULT_MAX_ROWS),
            fractional_bits=_positive_int(params, "fractional_bits", DEFAULT_FRACTIONAL_BITS, 0),
            group_by=_optional_str(params, "group_by"),
            categories=_optional_int(params, "categories"),
            elementwise=bool(params.get("elementwise", False)),
            length=_optional_int(params, "length"),
            recipient=_optional_str(params, "recipient"),
        )
        if parsed.recipient is not None and parsed.recipient not in parties:
            raise ConfigError(f"secure_sum: recipient '{parsed.recipient}' is not a party of the job")
        if len(parties) < 2:
            raise ConfigError("secure_sum needs at least two parties")
        if parsed.group_by and parsed.elementwise:
            raise ConfigError("secure_sum: choose 'group_by' or 'elementwise', not both")
        if parsed.group_by and not parsed.categories:
            raise ConfigError("secure_sum: 'group_by' needs 'categories' (how many)")
        if parsed.elementwise and not parsed.length:
            raise ConfigError("secure_sum: 'elementwise' needs 'length' (the vector's length)")
        terms = len(parties) * (1 if parsed.elementwise else parsed.max_rows)
        try:
            check_sum_capacity(parsed.bound, terms, parsed.fractional_bits)
        except BoundError as exc:
            raise ConfigError(f"secure_sum: {exc}") from None
        return parsed


def _positive_int(params: dict[str, Any], key: str, default: int, minimum: int = 1) -> int:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"secure_sum: '{key}' must be an integer >= {minimum}")
    return value


def _optional_int(params: dict[str, Any], key: str) -> int | None:
    return None if params.get(key) is None else _positive_int(params, key, 0)


def _optional_str(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"secure_sum: '{key}' must be a non-empty string")
    return value


def local_vector(params: SecureSumParams, party: str, datasets: DatasetRegistry,
                 ) -> tuple[np.ndarray, int]:
    """This party's input vector in the ring, and the rows it used."""
    ref = params.inputs[party]
    dataset = datasets.get(ref.dataset)
    where = f"column '{ref.column}' of dataset '{ref.dataset}'"
    column = dataset.column(ref.column)
    if column.dtype.kind not in "if":
        raise ConfigError(f"secure_sum: {where} is not numeric")
    rows = int(column.shape[0])
    if params.elementwise:
        if rows != params.length:
            raise ConfigError(f"secure_sum: {where} has {rows} rows, the job declares length "
                              f"{params.length}")
    elif rows > params.max_rows:
        raise PolicyError(f"secure_sum: {where} has more rows than the job's max_rows")
    try:
        encoded = encode(column, params.bound, params.fractional_bits)
    except BoundError:
        raise PolicyError(
            f"secure_sum: {where} holds values outside the declared bound {params.bound:g}"
        ) from None
    if params.elementwise:
        return encoded, rows
    if params.group_by is None:
        return np.array([encoded.sum(dtype=RING_DTYPE)], dtype=RING_DTYPE), rows
    groups = dataset.column(params.group_by)  # checked by SecureSumKind.plan
    categories = int(params.categories or 0)
    totals = np.zeros(categories, dtype=RING_DTYPE)
    np.add.at(totals, groups, encoded)
    return totals, rows


class SecureSumKind:
    name = KIND

    def plan(self, spec: JobSpec, party_id: str, datasets: DatasetRegistry) -> DataUse:
        params = SecureSumParams.from_json(spec.params, spec.parties)
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
            if groups.dtype.kind != "i" or (rows and (groups.min() < 0
                                                      or groups.max() >= categories)):
                raise ConfigError(f"secure_sum: group column '{params.group_by}' must hold "
                                  f"integers in [0, {categories})")
            smallest = int(np.bincount(groups, minlength=categories).min()) if rows else 0
        else:
            smallest = rows
        return DataUse(ref.dataset, columns, rows, smallest, params.recipient)

    def run(self, context: JobContext) -> JobOutcome:
        params = SecureSumParams.from_json(context.spec.params, context.spec.parties)
        me = context.channel.party_id
        vector, rows = local_vector(params, me, context.datasets)
        result = secure_sum(context.channel, vector, params.recipient)
        outcome = JobOutcome(rows_used=rows, values_opened=result.values_opened)
        if result.released is not None:
            outcome.arrays[RELEASED_ARRAY] = result.released
        outcome.output = {"vector_length": params.vector_length,
                          "fractional_bits": params.fractional_bits,
                          "recipient": params.recipient or context.requester.party_id}
        if result.total is not None:
            path = write_party_result(context, decode(result.total, params.fractional_bits).tolist())
            outcome.output["delivered_to"] = f"{me}:{path.name}"
        return outcome


def write_party_result(context: JobContext, total: list[float]) -> Path:
    """Keep a total addressed to this party on this party's own disk, never releasing it."""
    context.results_dir.mkdir(parents=True, exist_ok=True)
    path = context.results_dir / f"{context.spec.job_id}.json"
    path.write_text(json.dumps({"job_id": context.spec.job_id, "kind": KIND, "total": total}))
    return path
