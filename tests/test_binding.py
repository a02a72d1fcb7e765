"""Parties given different versions of one job derive unrelated masks: nothing to subtract.

On an earlier main a requester gave two parties the same job id with the
parties in different orders; both then added the same pairwise mask, so the
difference of their released vectors was the difference of their inputs, and
one honest sum more gave each party's own total.
"""

from __future__ import annotations

import time

import numpy as np

from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.crypto.fixedpoint import decode
from invisible.jobspec import JobSpec, JobState
from invisible.kinds.secure_sum import RELEASED_ARRAY
from invisible.net.pki import Identity, Role
from invisible.node.config import DatasetConfig
from invisible.node.datasets import load_dataset
from invisible.samples import SAMPLE_COLUMNS, SAMPLE_DATASET, sample_datasets, sample_path


def total_of(party: str) -> float:
    config = DatasetConfig(SAMPLE_DATASET, sample_path(party), SAMPLE_COLUMNS[party])
    return float(load_dataset(config).column("monthly_spend").sum())


def test_a_job_given_in_two_party_orders_releases_nothing_usable(tmp_path):
    layout = write_local_federation(tmp_path, ["bank", "hospital"], sample_datasets())
    requester = Identity("coordinator", Role.COORDINATOR)
    params = {"inputs": {p: {"dataset": SAMPLE_DATASET, "column": "monthly_spend"}
                         for p in ("bank", "hospital")}, "bound": 100000.0, "max_rows": 1000}
    orders = {"bank": ("bank", "hospital"), "hospital": ("hospital", "bank")}
    with InProcessNodes(layout) as nodes:
        for party, order in orders.items():
            nodes.nodes[party].executor.start_job(
                JobSpec("mixed-order", "secure_sum", order, params), requester)
        for party in orders:
            nodes.nodes[party].executor.run_job("mixed-order", requester)
        released = {}
        for party in orders:
            executor = nodes.nodes[party].executor
            deadline = time.monotonic() + 20
            status = executor.job_status("mixed-order", requester, 5)
            while status.state is JobState.RUNNING and time.monotonic() < deadline:
                status = executor.job_status("mixed-order", requester, 1)
            assert status.state is JobState.FINISHED
            released[party] = executor.job_output("mixed-order", RELEASED_ARRAY, requester)
    difference = float(decode(released["bank"] - released["hospital"])[0])
    true_difference = total_of("bank") - total_of("hospital")
    assert abs(difference - true_difference) > 1e6  # uniformly random, not x_bank - x_hospital
    assert np.all(released["bank"] != released["hospital"])
