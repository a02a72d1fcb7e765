"""Secure sum from the coordinator's side: the Python API behind `Federation.secure_sum`.

The coordinator declares, per party, the dataset and column to add, and a
public bound on the values. Each node checks the job against its own data,
runs the pairwise-masking protocol (:mod:`invisible.protocols.secure_sum`)
and, when the requester is the recipient, releases one masked vector. The
coordinator adds the masked vectors in the ring — the masks cancel — and
decodes only the total. A party recipient keeps its total on its own disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from invisible.crypto.fixedpoint import decode
from invisible.crypto.sharing import RING_DTYPE, reconstruct
from invisible.errors import ProtocolError
from invisible.net.jobs_api import JobRecord
from invisible.node.secure_sum import KIND, RELEASED_ARRAY, InputRef, SecureSumParams, input_refs

if TYPE_CHECKING:
    from invisible.coordinator.federation import Federation


@dataclass
class SecureSumResult:
    job_id: str
    #: The decoded totals (length 1 for a column total), or None if a party received them.
    total: np.ndarray | None
    recipient: str
    records: dict[str, JobRecord] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def value(self) -> float:
        """The total of a single-column sum."""
        if self.total is None or self.total.shape != (1,):
            raise ProtocolError("this result is not a single total held by the requester")
        return float(self.total[0])


def run_secure_sum(
    federation: Federation,
    inputs: Mapping[str, tuple[str, str] | InputRef],
    bound: float,
    *,
    group_by: str | None = None,
    categories: int | None = None,
    elementwise: bool = False,
    length: int | None = None,
    fractional_bits: int = 16,
    max_rows: int | None = None,
    recipient: str | None = None,
    job_id: str | None = None,
    timeout_s: float | None = None,
) -> SecureSumResult:
    """Run a secure sum over the parties named in `inputs` ({party: (dataset, column)})."""
    parties = tuple(inputs)
    refs = input_refs(inputs)
    raw = SecureSumParams(
        refs, float(bound), fractional_bits=fractional_bits, group_by=group_by,
        categories=categories, elementwise=elementwise, length=length, recipient=recipient,
        **({"max_rows": max_rows} if max_rows is not None else {}),
    ).to_json()
    params = SecureSumParams.from_json(raw, parties)  # refuse bad input before any node sees it
    return run_secure_sum_params(federation, params, job_id=job_id, timeout_s=timeout_s)


def run_secure_sum_params(federation: Federation, params: SecureSumParams, *,
                          job_id: str | None = None,
                          timeout_s: float | None = None) -> SecureSumResult:
    """Run a secure sum from checked parameters (see :class:`SecureSumParams`)."""
    parties = tuple(params.inputs)
    result = federation.run(KIND, params.to_json(), parties, job_id=job_id, timeout_s=timeout_s)
    total: np.ndarray | None = None
    if params.recipient is None:
        masked = [result.arrays[p][RELEASED_ARRAY] for p in parties]
        if any(m.dtype != RING_DTYPE or m.shape != (params.vector_length,) for m in masked):
            raise ProtocolError("a party released a masked vector of the wrong shape")
        total = decode(reconstruct(masked), params.fractional_bits)
    return SecureSumResult(
        result.job_id, total, params.recipient or federation.config.coordinator_id,
        result.records, result.seconds,
    )
