"""The `paillier_sum` job kind: a secure sum by Paillier encryption (see the protocol).

Parameters: those of `secure_sum` (inputs, bound, max_rows, fractional_bits,
group_by/categories or elementwise/length), without `recipient`, plus

    "key_holder": "bank",     # makes the job's key pair, decrypts, releases the total
    "aggregator": "hospital", # optional: adds the ciphertexts (default: first other party)
    "key_bits": 2048          # optional, at least 2048

The key pair is made per job by the key holder. The total goes to the
requester; the key holder learns it too (it decrypts it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from invisible.crypto.fixedpoint import decode
from invisible.crypto.paillier.keys import MIN_KEY_BITS
from invisible.crypto.sharing import RING_DTYPE
from invisible.errors import ConfigError
from invisible.net.jobs_api import JobSpec
from invisible.node.datasets import DatasetRegistry
from invisible.node.jobkind import DataUse, JobContext, JobOutcome
from invisible.node.secure_sum import SecureSumKind, SecureSumParams, local_vector
from invisible.protocols.paillier_sum import paillier_sum

KIND = "paillier_sum"
TOTAL_ARRAY = "total"


@dataclass(frozen=True)
class PaillierSumParams:
    base: SecureSumParams
    key_holder: str
    aggregator: str
    key_bits: int

    @property
    def bias(self) -> int:
        """The largest |entry| of a party's vector, in fixed-point units."""
        rows = 1 if self.base.elementwise else self.base.max_rows
        return int(rows * self.base.bound * 2**self.base.fractional_bits)

    @classmethod
    def from_json(cls, params: dict[str, Any], parties: tuple[str, ...]) -> PaillierSumParams:
        own = {k: params[k] for k in ("key_holder", "aggregator", "key_bits") if k in params}
        rest = {k: v for k, v in params.items() if k not in own}
        if "recipient" in rest:
            raise ConfigError("paillier_sum: the total goes to the requester; no 'recipient'")
        base = SecureSumParams.from_json(rest, parties)
        key_holder = own.get("key_holder")
        if key_holder not in parties:
            raise ConfigError("paillier_sum: 'key_holder' must name a party of the job")
        others = [p for p in parties if p != key_holder]
        aggregator = own.get("aggregator", others[0] if others else None)
        if aggregator not in others:
            raise ConfigError("paillier_sum: 'aggregator' must be a party other than the "
                              "key holder")
        key_bits = own.get("key_bits", MIN_KEY_BITS)
        if isinstance(key_bits, bool) or not isinstance(key_bits, int) or key_bits < MIN_KEY_BITS:
            raise ConfigError(f"paillier_sum: 'key_bits' must be an integer >= {MIN_KEY_BITS}")
        # The capacity check of SecureSumParams (parties x bias < 2^63) already keeps
        # 2 x bias x additions below 2^64, so every slot fits 64 bits.
        return cls(base, key_holder, aggregator, key_bits)


class PaillierSumKind:
    name = KIND

    def plan(self, spec: JobSpec, party_id: str, datasets: DatasetRegistry) -> DataUse:
        params = PaillierSumParams.from_json(spec.params, spec.parties)
        return SecureSumKind().plan(
            JobSpec(spec.job_id, spec.kind, spec.parties, params.base.to_json()),
            party_id, datasets)

    def run(self, context: JobContext) -> JobOutcome:
        params = PaillierSumParams.from_json(context.spec.params, context.spec.parties)
        me = context.channel.party_id
        vector, rows = local_vector(params.base, me, context.datasets)
        result = paillier_sum(
            context.channel, vector.view("int64"), key_holder=params.key_holder,
            aggregator=params.aggregator, bias=params.bias, rng=context.rng,
            workers=os.cpu_count() or 1, key_bits=params.key_bits,
        )
        outcome = JobOutcome(rows_used=rows, output={
            "vector_length": params.base.vector_length, "key_holder": params.key_holder,
            "aggregator": params.aggregator, "recipient": context.requester.party_id,
        })
        if result.total is not None:
            outcome.arrays[TOTAL_ARRAY] = decode(result.total.view(RING_DTYPE),
                                                 params.base.fractional_bits)
            outcome.values_opened = params.base.vector_length
        return outcome
