"""The job kinds a party node runs (see :mod:`invisible.node.jobkind`)."""

from __future__ import annotations

import time

import numpy as np

from invisible.errors import ConfigError
from invisible.net.jobs_api import JobSpec
from invisible.node.datasets import DatasetRegistry
from invisible.node.jobkind import DataUse, JobContext, JobKind, JobOutcome
from invisible.node.paillier_sum import PaillierSumKind
from invisible.node.secure_sum import SecureSumKind
from invisible.node.statistics import StatisticsKind
from invisible.protocols.connectivity import run_connectivity_check


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


def default_kinds() -> dict[str, JobKind]:
    kinds: list[JobKind] = [ConnectivityKind(), BandwidthKind(), SecureSumKind(),
                            PaillierSumKind(), StatisticsKind()]
    return {kind.name: kind for kind in kinds}
