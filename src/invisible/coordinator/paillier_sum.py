"""Paillier secure sum from the coordinator's side (`Federation.paillier_sum`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from invisible.coordinator.secure_sum import SecureSumResult
from invisible.errors import ProtocolError
from invisible.node.paillier_sum import KIND, TOTAL_ARRAY, PaillierSumParams
from invisible.node.secure_sum import InputRef, SecureSumParams, input_refs

if TYPE_CHECKING:
    from invisible.coordinator.federation import Federation


def run_paillier_sum(
    federation: Federation,
    inputs: Mapping[str, tuple[str, str] | InputRef],
    bound: float,
    *,
    key_holder: str,
    aggregator: str | None = None,
    job_id: str | None = None,
    timeout_s: float | None = None,
    **options: object,
) -> SecureSumResult:
    """Sum a column (or per-category totals, or vectors) by Paillier; the total comes back."""
    parties = tuple(inputs)
    refs = input_refs(inputs)
    raw = SecureSumParams(refs, float(bound), **options).to_json()  # type: ignore[arg-type]
    del raw["recipient"]
    raw["key_holder"] = key_holder
    if aggregator is not None:
        raw["aggregator"] = aggregator
    params = PaillierSumParams.from_json(raw, parties)  # refuse bad input before any node
    result = federation.run(KIND, raw, parties, job_id=job_id, timeout_s=timeout_s)
    total = result.arrays.get(params.key_holder, {}).get(TOTAL_ARRAY)
    if total is None or total.shape != (params.base.vector_length,):
        raise ProtocolError(f"party '{key_holder}' released no total of the expected length")
    return SecureSumResult(result.job_id, np.asarray(total, dtype=np.float64),
                           federation.config.coordinator_id, result.records, result.seconds)
