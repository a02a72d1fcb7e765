"""The `paillier_sum` job kind: the sums of `secure_sum`, by Paillier encryption.

The key holder (a party) makes a fresh key pair for the job; the other
parties pack and encrypt their vectors; the aggregator (another party)
checks and adds the ciphertexts and re-randomises the sum; the key holder
decrypts only the total and releases it to the requester (see
:mod:`invisible.protocols.paillier_sum` for the steps and what each party
learns). The key holder learns the total too. The aggregator and the key
holder must not collude.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from invisible.crypto.fixedpoint import decode
from invisible.crypto.noise import magnitude_bound
from invisible.crypto.paillier.keys import MIN_KEY_BITS
from invisible.crypto.paillier.packing import fixed_point_bias
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.base import (
    Datasets,
    DataUse,
    DeclaredUse,
    JobContext,
    JobKind,
    JobOutcome,
    check_bounds,
)
from invisible.kinds.params import param
from invisible.kinds.secure_sum import (
    SecureSumResult,
    SumParams,
    declare_sum,
    local_vector,
    plan_sum,
)
from invisible.protocols.paillier_sum import paillier_sum

TOTAL_ARRAY = "total"
#: Key sizes a key holder makes for one job (a larger one would tie its node up for hours).
MAX_KEY_BITS = 4096


@dataclass(frozen=True, kw_only=True)
class PaillierSumParams(SumParams[SecureSumResult]):
    KIND: ClassVar[str] = "paillier_sum"

    key_holder: str = param("the party that makes the job's key pair, decrypts the total and "
                            "releases it", example="telco")
    aggregator: str | None = param("the party that adds the ciphertexts; none: the first "
                                   "other party", default=None, example="hospital")
    key_bits: int = param("Paillier modulus size", default=MIN_KEY_BITS, ge=MIN_KEY_BITS,
                          le=MAX_KEY_BITS)

    def aggregator_of(self, parties: tuple[str, ...]) -> str:
        """The aggregator, declared or by default (the first party in the job's order that
        is not the key holder)."""
        if self.aggregator is not None:
            return self.aggregator
        return next(p for p in parties if p != self.key_holder)

    @property
    def bias(self) -> int:
        """The largest |entry| of a party's vector, in fixed-point units."""
        values = fixed_point_bias(self.bound, self.fractional_bits,
                                  1 if self.elementwise else self.max_rows)
        return values if self.sigma is None else values + magnitude_bound(self.sigma)

    def check(self, parties: tuple[str, ...]) -> None:
        # The capacity check of SumParams (parties x bias < 2^63) already keeps
        # 2 x bias x additions below 2^64, so every slot fits 64 bits.
        super().check(parties)
        if self.key_holder not in parties:
            raise ConfigError(f"{self.KIND}: 'key_holder' must name a party of the job")
        if self.aggregator is not None and (self.aggregator not in parties
                                            or self.aggregator == self.key_holder):
            raise ConfigError(f"{self.KIND}: 'aggregator' must be a party other than the key "
                              "holder")


class PaillierSumKind(JobKind[PaillierSumParams, SecureSumResult]):
    name = "paillier_sum"
    bounds_values = True
    params_type = PaillierSumParams
    summary = ("the sums of secure_sum by Paillier encryption: a key holder decrypts the "
               "total for the requester")

    def declare(self, params: PaillierSumParams, party_id: str) -> DeclaredUse:
        # The key holder decrypts the total, then releases it to the requester: both learn
        # it, so the policy must allow both as recipients.
        return params.declared_cost(
            declare_sum(params, party_id, params.key_holder, requester_too=True))

    def plan(self, params: PaillierSumParams, party_id: str, datasets: Datasets) -> DataUse:
        return plan_sum(params, party_id, datasets)

    def run(self, params: PaillierSumParams, context: JobContext) -> JobOutcome:
        vector, rows, clipped = local_vector(params, context.channel.party_id, context.datasets)
        check_bounds(context, context.spec.parties, clipped)
        result = paillier_sum(
            context.channel, params.noised(vector).view("int64"), key_holder=params.key_holder,
            aggregator=params.aggregator_of(context.spec.parties), bias=params.bias, rng=context.rng,
            workers=os.cpu_count() or 1, key_bits=params.key_bits,
        )
        outcome = JobOutcome(rows_used=rows, clipped=clipped,
                             ciphertext_ops=result.ciphertext_ops, output={
            "vector_length": params.vector_length, "key_holder": params.key_holder,
            "aggregator": params.aggregator_of(context.spec.parties)})
        if result.total is not None:
            outcome.arrays[TOTAL_ARRAY] = decode(result.total.view(RING_DTYPE),
                                                 params.fractional_bits)
            outcome.values_opened = params.vector_length
        return outcome

    def finish(self, params: PaillierSumParams, job: JobResult) -> SecureSumResult:
        total = job.arrays.get(params.key_holder, {}).get(TOTAL_ARRAY)
        if total is None or total.shape != (params.vector_length,):
            raise ProtocolError(f"party '{params.key_holder}' released no total of the expected "
                                "length")
        return SecureSumResult(job, np.asarray(total, dtype=np.float64),
                               job.requester or "requester", params.fractional_bits,
                               params.group_by, params.elementwise, params.key_holder,
                               noise_sd=params.noise_sd(len(job.parties)), rho=params.rho)
