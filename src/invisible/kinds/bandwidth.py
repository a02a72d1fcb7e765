"""The `bandwidth` job kind, a diagnostic: one party sends random ring elements to another.

The sender reports how long the send took (until the receiver's node held
all of it): the raw rate of this channel, which benchmarks compare with.
Carries no data of any party.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from invisible.errors import ConfigError, ProtocolError
from invisible.jobspec import JobResult
from invisible.kinds.base import JobContext, JobKind, JobOutcome, UsesNoData
from invisible.kinds.params import Params, param
from invisible.kinds.results import Result, Table


@dataclass(frozen=True, kw_only=True)
class BandwidthParams(Params["BandwidthResult"]):
    KIND: ClassVar[str] = "bandwidth"

    sender: str = param("the party that sends", example="bank")
    receiver: str = param("the party that receives", example="hospital")
    elements: int = param("how many 8-byte ring elements to send", ge=1, le=1 << 28,
                          example=1000000)

    def job_parties(self, available: tuple[str, ...]) -> tuple[str, ...]:
        return (self.sender, self.receiver)

    def check(self, parties: tuple[str, ...]) -> None:
        if self.sender == self.receiver or self.sender not in parties \
                or self.receiver not in parties:
            raise ConfigError("bandwidth: 'sender' and 'receiver' must be distinct parties of "
                              "the job")


@dataclass(repr=False)
class BandwidthResult(Result):
    sender: str
    receiver: str
    elements: int
    send_seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.elements * 8 / self.send_seconds / 1e6 if self.send_seconds else 0.0

    def table(self) -> Table:
        return Table(("sender", "receiver", "bytes", "send ms", "MB/s"),
                     [(self.sender, self.receiver, self.elements * 8,
                       round(self.send_seconds * 1000, 2), round(self.megabytes_per_second, 1))],
                     decimals=2)


class BandwidthKind(UsesNoData, JobKind[BandwidthParams, BandwidthResult]):
    name = "bandwidth"
    params_type = BandwidthParams
    summary = ("diagnostic: one party sends random ring elements to another and reports the "
               "time; uses no data")

    def traffic(self, params: BandwidthParams, party_id: str) -> int:
        return params.elements * 8

    def run(self, params: BandwidthParams, context: JobContext) -> JobOutcome:
        channel = context.channel
        if channel.party_id == params.sender:
            vector = context.rng.random_uint64(params.elements)
            started = time.perf_counter()
            channel.send(params.receiver, "bandwidth", vector)
            return JobOutcome(output={"send_seconds": time.perf_counter() - started})
        if channel.party_id == params.receiver:
            channel.recv_array(params.sender, "bandwidth", np.uint64, (params.elements,))
        return JobOutcome()

    def finish(self, params: BandwidthParams, job: JobResult) -> BandwidthResult:
        seconds = job.outputs.get(params.sender, {}).get("send_seconds")
        if not isinstance(seconds, int | float):
            raise ProtocolError(f"party '{params.sender}' reported no send time")
        return BandwidthResult(job, params.sender, params.receiver, params.elements,
                               float(seconds))
