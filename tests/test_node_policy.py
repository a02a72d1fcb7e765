"""Jobs that use no data are controlled and counted too: a node's own [policy].

On an earlier main, `connectivity`, `bandwidth` and `mul_benchmark` ran for any
requester with no policy and no quota: a requester allowed one job a day ran
a 1 GiB bandwidth job that pushed two nodes past 1.1 GB of memory.
"""

from __future__ import annotations

import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.errors import PolicyError
from invisible.metering.policy import NodePolicy, Refusal, authorise_without_data

NODE_POLICY = {"requesters": ["analyst"], "kinds": ["connectivity", "bandwidth"],
               "jobs_per_day": 3, "max_bytes": 8_000}


@pytest.fixture
def federation(tmp_path):
    layout = write_local_federation(tmp_path, ["a", "b"], coordinators=("analyst", "other"),
                                    node_policy=NODE_POLICY)
    with InProcessNodes(layout) as nodes, \
            Federation.from_config(layout.coordinator_configs["analyst"]) as analyst, \
            Federation.from_config(layout.coordinator_configs["other"]) as other:
        yield analyst, other, nodes


def test_only_allowed_requesters_and_kinds_and_sizes(federation):
    analyst, other, nodes = federation
    assert analyst.connectivity().ok
    with pytest.raises(PolicyError, match="rule 'not-allowed': 'other' may not run "
                                          "connectivity on this node"):
        other.connectivity()
    assert analyst.bandwidth("a", "b", 1_000).send_seconds > 0  # 8,000 bytes: at the cap
    with pytest.raises(PolicyError, match="rule 'size': a bandwidth job may move at most 8000"):
        analyst.bandwidth("a", "b", 1_001)
    events = [e.event for e in nodes.nodes["a"].ledger.entries()]
    assert events.count("refused") == 2 and events.count("finished") == 2


def test_jobs_without_data_count_against_a_daily_quota(federation):
    analyst, _, _ = federation
    for _ in range(3):
        analyst.connectivity()
    with pytest.raises(PolicyError, match="rule 'quota': jobs per day without data for "
                                          "'analyst' \\(limit 3\\)"):
        analyst.connectivity()


def test_without_a_node_policy_jobs_without_data_are_refused(tmp_path):
    layout = write_local_federation(tmp_path, ["a", "b"], node_policy=None)
    with InProcessNodes(layout), Federation.from_config(layout.coordinator_config) as fed:
        with pytest.raises(PolicyError, match="rule 'no-policy': this node has no \\[policy\\]"):
            fed.connectivity()


def test_the_size_cap_holds_exactly_at_its_edge():
    policy = NodePolicy(frozenset({"*"}), frozenset({"*"}), None, 100)
    authorise_without_data("a", policy, "x", "bandwidth", 100)
    with pytest.raises(Refusal, match="rule 'size'"):
        authorise_without_data("a", policy, "x", "bandwidth", 101)
