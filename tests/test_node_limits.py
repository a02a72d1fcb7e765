"""A node's memory and logs stay bounded and honest under requests it does not control."""

from __future__ import annotations

import logging

import pytest

from invisible.coordinator.federation import Federation
from invisible.coordinator.local import InProcessNodes, write_local_federation
from invisible.errors import ConfigError
from invisible.jobspec import JobSpec
from invisible.net.pki import Identity, Role
from invisible.node import executor as executor_module
from invisible.text import printable


def test_text_from_a_requester_cannot_forge_a_log_line():
    assert printable("done\n2026-11-30 INFO forged") == "done\\n2026-11-30 INFO forged"
    assert printable("\x1b[31mred\x00") == "\\x1b[31mred\\x00"
    assert len(printable("x" * 10_000, 200)) == 200


def test_a_cancel_reason_is_logged_on_one_line(tmp_path, caplog):
    layout = write_local_federation(tmp_path, ["a", "b"])
    requester = Identity("coordinator", Role.COORDINATOR)
    with InProcessNodes(layout) as nodes:
        executor = nodes.nodes["a"].executor
        executor.start_job(JobSpec("prepared-1", "connectivity", ("a", "b")), requester)
        with caplog.at_level(logging.INFO, logger="invisible.node.executor"):
            executor.cancel_job("prepared-1", requester, "x\nINFO job forged finished")
        status = executor.job_status("prepared-1", requester, 0)
    lines = [r.getMessage() for r in caplog.records if "cancelled" in r.getMessage()]
    assert lines and all("\n" not in line and "x\\nINFO" in line for line in lines)
    assert "\n" not in status.error


def test_ended_jobs_are_forgotten_beyond_a_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(executor_module, "MAX_FINISHED_JOBS", 3)
    layout = write_local_federation(tmp_path, ["a", "b"])
    requester = Identity("coordinator", Role.COORDINATOR)
    with InProcessNodes(layout) as nodes, Federation.from_config(layout.coordinator_config) as fed:
        jobs = [fed.connectivity().job_id for _ in range(6)]
        executor = nodes.nodes["a"].executor
        executor.drop_expired_outputs()
        kept = [j for j in jobs if j in executor._jobs]
        assert kept == jobs[-3:]
        with pytest.raises(ConfigError, match=f"no job '{jobs[0]}'"):
            executor.job_status(jobs[0], requester, 0)


def test_the_node_log_format_keeps_every_record_on_one_line():
    from invisible.runtime import OneLineFormatter

    formatter = OneLineFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "job %s cancelled: %s",
                               ("j1", "x\nINFO job j2 finished\r\x1b[2K"), None)
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line == "INFO job j1 cancelled: x\\nINFO job j2 finished\\r\\x1b[2K"
    assert record.args == ("j1", "x\nINFO job j2 finished\r\x1b[2K")  # the record is untouched
