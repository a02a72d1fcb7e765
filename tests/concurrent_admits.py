"""Twenty jobs admitted at once: the race at the edge of a quota or a budget."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from invisible.metering.meter import JobMeta, Meter
from invisible.metering.policy import Refusal


def admit_at_once(meters: Sequence[Meter], jobs: Sequence[JobMeta]) -> list[str]:
    """Admit every job from its own thread, all released together, job i on meter
    i % len(meters) (two ledger connections on one file stand for two processes); the
    outcome of each: "accepted" or the refusing rule."""
    outcomes: list[str] = []
    barrier = threading.Barrier(len(jobs))

    def request(index: int, job: JobMeta) -> None:
        barrier.wait()
        try:
            meters[index % len(meters)].admit(job)
            outcomes.append("accepted")
        except Refusal as refusal:
            outcomes.append(refusal.rule)

    threads = [threading.Thread(target=request, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes

