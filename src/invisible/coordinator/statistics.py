"""Statistics from the coordinator's side (`Federation.statistics`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from invisible.crypto.fixedpoint import decode
from invisible.node.secure_sum import InputRef, input_refs
from invisible.node.statistics import (
    FRACTIONAL_BITS,
    KIND,
    SHARES_ARRAY,
    StatisticsParams,
    combine,
)
from invisible.protocols.mpc.statistics import finish

if TYPE_CHECKING:
    from invisible.coordinator.federation import Federation, JobResult


def run_statistics(federation: Federation, inputs: Mapping[str, tuple[str, str] | InputRef],
                   bound: float, *, outputs: Sequence[str], dealer: str, max_rows: int = 1 << 20,
                   recipient: str | None = None, job_id: str | None = None,
                   ) -> tuple[dict[str, float], JobResult]:
    """Declared statistics of a column split by rows; ({output: value}, the job's result).

    With a party as recipient, the values go to that party, which releases
    them to the requester too.
    """
    refs = input_refs(inputs)
    params = StatisticsParams(refs, float(bound), max_rows, tuple(outputs), dealer, recipient)
    raw = params.to_json()
    StatisticsParams.from_json(raw, (*refs, dealer))  # refuse bad input before any node sees it
    result = federation.run(KIND, raw, (*refs, dealer), job_id=job_id)
    released = {p: arrays[SHARES_ARRAY] for p, arrays in result.arrays.items()
                if SHARES_ARRAY in arrays}
    opened = decode(combine(params, released), FRACTIONAL_BITS)
    indices = result.outputs[next(iter(refs))]["opened_indices"]
    return finish(dict(zip(indices, opened.tolist(), strict=True)), params.outputs), result
