"""The `mul_benchmark` job kind, a diagnostic: fixed-point products of two shared vectors.

The job's parties other than the dealer compute :func:`product_program`
(the first shares x, the second y, both random, not anyone's data; the
product with exact truncation; the product opened to every party) with
tuples from the dealer. Each computing party reports how long the whole
program took, the product alone (tuples from the dealer included) and the
bytes it sent for the product. Uses no data of the parties.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from invisible.crypto.prg import Prg
from invisible.errors import ConfigError
from invisible.jobspec import JobResult
from invisible.kinds.base import JobContext, JobKind, JobOutcome, UsesNoData
from invisible.kinds.params import Params, param
from invisible.kinds.results import Result, Table
from invisible.protocols.mpc.arithmetic import input_from, mul, open_all
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.dealer import run_dealer
from invisible.protocols.mpc.provider import DealerProvider, TupleProvider

#: Inputs of the ss_mul benchmark lie in [-BENCHMARK_BOUND, BENCHMARK_BOUND].
BENCHMARK_BOUND = 100.0
#: A generous bound on what one product makes a node move (inputs, openings, tuples).
BYTES_PER_PRODUCT = 128


@dataclass(frozen=True, kw_only=True)
class MulBenchmarkParams(Params["MulBenchmarkResult"]):
    KIND: ClassVar[str] = "mul_benchmark"

    elements: int = param("how many products", ge=1, le=1 << 24, example=100000)
    dealer: str = param("a dealer node of the job", example="dealer")

    def job_parties(self, available: tuple[str, ...]) -> tuple[str, ...]:
        return (*(p for p in available if p != self.dealer), self.dealer)

    def check(self, parties: tuple[str, ...]) -> None:
        if self.dealer not in parties or len(parties) < 3:
            raise ConfigError("mul_benchmark: the job needs its 'dealer' among its parties and "
                              "at least two computing parties")


@dataclass(repr=False)
class MulBenchmarkResult(Result):
    elements: int
    #: Per computing party: the whole program's, and the product's, seconds; bytes it sent.
    seconds_by_party: dict[str, float]
    product_seconds: dict[str, float]
    product_bytes_sent: dict[str, int]
    tuples_served: int

    @property
    def products_per_second(self) -> float:
        """Products per second of the slowest party's whole program."""
        slowest = max(self.seconds_by_party.values(), default=0.0)
        return self.elements / slowest if slowest else 0.0

    def table(self) -> Table:
        return Table(("party", "program ms", "product ms", "product bytes sent"),
                     [(p, round(s * 1000, 2), round(self.product_seconds[p] * 1000, 2),
                       self.product_bytes_sent[p]) for p, s in self.seconds_by_party.items()],
                     decimals=2)

    def notes(self) -> list[str]:
        return [f"{self.elements:,} products, {self.products_per_second:,.0f} per second; "
                f"the dealer served {self.tuples_served} tuples"]


def product_program(ctx: MpcContext, provider: TupleProvider, x: np.ndarray | None,
                    y: np.ndarray | None, shape: tuple[int, ...], rng: Prg,
                    ) -> tuple[np.ndarray, float, int]:
    """The ss_mul benchmark's program, the steps SPU's timing covers too.

    The first computing party shares x, the second y; the product with exact
    truncation; the product opened to every party. Returns the product's
    encoding, and the seconds and bytes this party spent on the product alone.
    """
    a = input_from(ctx, ctx.parties[0], x, BENCHMARK_BOUND, shape, rng)
    b = input_from(ctx, ctx.parties[1], y, BENCHMARK_BOUND, shape, rng)
    started, sent = time.perf_counter(), ctx.channel.stats.bytes_sent
    z = mul(ctx, provider, a, b)
    seconds, sent = time.perf_counter() - started, ctx.channel.stats.bytes_sent - sent
    (opened,) = open_all(ctx, [z.share], "benchmark-output")
    return opened, seconds, sent


class MulBenchmarkKind(UsesNoData, JobKind[MulBenchmarkParams, MulBenchmarkResult]):
    name = "mul_benchmark"
    params_type = MulBenchmarkParams
    summary = ("diagnostic: fixed-point products of two shared random vectors with a dealer, "
               "timed; uses no data")

    def traffic(self, params: MulBenchmarkParams, party_id: str) -> int:
        return params.elements * BYTES_PER_PRODUCT

    def run(self, params: MulBenchmarkParams, context: JobContext) -> JobOutcome:
        channel, dealer = context.channel, params.dealer
        parties = tuple(p for p in context.spec.parties if p != dealer)
        if channel.party_id == dealer:
            return JobOutcome(output={"tuples_served": run_dealer(channel, parties, context.rng)})
        ctx = MpcContext(channel, parties, dealer)
        shape = (params.elements,)
        # Benchmark values, uniform in [-bound, bound): not data of anyone's.
        values = (context.rng.random_uint64(shape) >> np.uint64(11)) * 2.0**-52 - 1.0
        values *= BENCHMARK_BOUND
        started = time.perf_counter()
        provider = DealerProvider(channel, parties, dealer)
        try:
            _, product_seconds, product_bytes = product_program(
                ctx, provider, values if ctx.index == 0 else None,
                values if ctx.index == 1 else None, shape, context.rng)
        finally:
            provider.close()
        return JobOutcome(output={"seconds": time.perf_counter() - started,
                                  "product_seconds": product_seconds,
                                  "product_bytes_sent": product_bytes})

    def finish(self, params: MulBenchmarkParams, job: JobResult) -> MulBenchmarkResult:
        outputs = job.outputs
        computing = [p for p in job.parties if p != params.dealer]
        return MulBenchmarkResult(
            job, params.elements, {p: float(outputs[p]["seconds"]) for p in computing},
            {p: float(outputs[p]["product_seconds"]) for p in computing},
            {p: int(outputs[p]["product_bytes_sent"]) for p in computing},
            int(outputs.get(params.dealer, {}).get("tuples_served", 0)))
