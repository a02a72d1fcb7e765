"""The job kinds a party node runs (see :mod:`invisible.node.jobkind`)."""

from __future__ import annotations

import time

import numpy as np

from invisible.crypto.prg import Prg
from invisible.errors import ConfigError
from invisible.net.jobs_api import JobSpec
from invisible.node.datasets import DatasetRegistry
from invisible.node.jobkind import DataUse, JobContext, JobKind, JobOutcome
from invisible.node.paillier_sum import PaillierSumKind
from invisible.node.secure_sum import SecureSumKind
from invisible.node.statistics import StatisticsKind
from invisible.protocols.connectivity import run_connectivity_check
from invisible.protocols.mpc.context import MpcContext
from invisible.protocols.mpc.dealer import TupleProvider


class ConnectivityKind:
    """Every pair of parties proves mutual-TLS reachability and key agreement."""

    name = "connectivity"

    def plan(self, spec: JobSpec, party_id: str, datasets: DatasetRegistry) -> DataUse | None:
        if spec.params:
            raise ConfigError("a connectivity job takes no parameters")
        if len(spec.parties) < 2:
            raise ConfigError("a connectivity job needs at least two parties")
        return None

    def run(self, context: JobContext) -> JobOutcome:
        result = run_connectivity_check(context.channel)
        return JobOutcome(output={
            "peers_confirmed": list(result.peers_confirmed),
            "seconds": round(result.seconds, 6),
        })


class BandwidthKind:
    """Diagnostic: one party sends a vector of random ring elements to another.

    Params: ``{"sender": id, "receiver": id, "elements": n}``. The sender
    reports how long the send took (until the receiver's node held all of
    it): the raw rate of this channel, which benchmarks compare with.
    Carries no data of the party.
    """

    name = "bandwidth"

    def plan(self, spec: JobSpec, party_id: str, datasets: DatasetRegistry) -> DataUse | None:
        params = spec.params
        if set(params) != {"sender", "receiver", "elements"} or not (
            params["sender"] in spec.parties and params["receiver"] in spec.parties
            and params["sender"] != params["receiver"]
            and isinstance(params["elements"], int) and 0 < params["elements"] <= 1 << 28
        ):
            raise ConfigError("a bandwidth job needs distinct parties 'sender' and 'receiver' of "
                              "the job and 1 <= 'elements' <= 2^28")
        return None

    def run(self, context: JobContext) -> JobOutcome:
        params, channel = context.spec.params, context.channel
        if channel.party_id == params["sender"]:
            vector = context.rng.random_uint64(params["elements"])
            started = time.perf_counter()
            channel.send(params["receiver"], "bandwidth", vector)
            return JobOutcome(output={"send_seconds": time.perf_counter() - started})
        if channel.party_id == params["receiver"]:
            channel.recv_array(params["sender"], "bandwidth", np.uint64, (params["elements"],))
        return JobOutcome()


class MulBenchmarkKind:
    """Diagnostic: fixed-point products of two shared random vectors, with a dealer.

    Params: ``{"elements": n, "dealer": id}``; the job's other parties compute
    :func:`product_program`. Each computing party reports how long the whole
    program took, and the product alone (tuples from the dealer included),
    and the bytes it sent for the product. Uses no data of the parties.
    """

    name = "mul_benchmark"

    def plan(self, spec: JobSpec, party_id: str, datasets: DatasetRegistry) -> DataUse | None:
        params = spec.params
        if set(params) != {"elements", "dealer"} or params["dealer"] not in spec.parties or not (
                isinstance(params["elements"], int) and 0 < params["elements"] <= 1 << 24) \
                or len(spec.parties) < 3:
            raise ConfigError("a mul_benchmark job needs 1 <= 'elements' <= 2^24, a 'dealer' of "
                              "the job and at least two computing parties")
        return None

    def run(self, context: JobContext) -> JobOutcome:
        from invisible.protocols.mpc.dealer import DealerProvider, run_dealer

        params, channel = context.spec.params, context.channel
        dealer = params["dealer"]
        parties = tuple(p for p in context.spec.parties if p != dealer)
        if channel.party_id == dealer:
            return JobOutcome(output={"tuples_served": run_dealer(channel, parties, context.rng)})
        ctx = MpcContext(channel, parties, dealer)
        shape = (params["elements"],)
        # Benchmark values, uniform in [-bound, bound): not data of anyone's.
        values = (context.rng.random_uint64(shape) >> np.uint64(11)) * 2.0**-52 - 1.0
        values *= BENCHMARK_BOUND
        started = time.perf_counter()
        provider = DealerProvider(channel, parties, dealer)
        _, product_seconds, product_bytes = product_program(
            ctx, provider, values if ctx.index == 0 else None, values if ctx.index == 1 else None,
            shape, context.rng)
        provider.close()
        return JobOutcome(output={"seconds": time.perf_counter() - started,
                                  "product_seconds": product_seconds,
                                  "product_bytes_sent": product_bytes})


#: Inputs of the ss_mul benchmark lie in [-BENCHMARK_BOUND, BENCHMARK_BOUND].
BENCHMARK_BOUND = 100.0


def product_program(ctx: MpcContext, provider: TupleProvider, x: np.ndarray | None,
                    y: np.ndarray | None, shape: tuple[int, ...], rng: Prg,
                    ) -> tuple[np.ndarray, float, int]:
    """The ss_mul benchmark's program, the steps SPU's timing covers too.

    The first computing party shares x, the second y; the product with exact
    truncation; the product opened to every party. Returns the product's
    encoding, and the seconds and bytes this party spent on the product alone.
    """
    from invisible.protocols.mpc.arithmetic import input_from, mul, open_all

    a = input_from(ctx, ctx.parties[0], x, BENCHMARK_BOUND, shape, rng)
    b = input_from(ctx, ctx.parties[1], y, BENCHMARK_BOUND, shape, rng)
    started, sent = time.perf_counter(), ctx.channel.stats.bytes_sent
    z = mul(ctx, provider, a, b)
    seconds, sent = time.perf_counter() - started, ctx.channel.stats.bytes_sent - sent
    (opened,) = open_all(ctx, [z.share], "benchmark-output")
    return opened, seconds, sent


def default_kinds() -> dict[str, JobKind]:
    kinds: list[JobKind] = [ConnectivityKind(), BandwidthKind(), SecureSumKind(),
                            PaillierSumKind(), StatisticsKind(), MulBenchmarkKind()]
    return {kind.name: kind for kind in kinds}
