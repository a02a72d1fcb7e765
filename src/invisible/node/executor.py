"""Runs jobs on a party node: validate, run in a worker thread, keep the status.

A job is validated completely (id, kind, parties, parameters, datasets)
before its thread starts, so a refused job touches no data. Only the
coordinator identity that started a job may read its status, fetch its
output or cancel it. A job that fails tells its peers, so they fail at once
rather than at their deadline, and releases nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from invisible.crypto.prg import Prg
from invisible.errors import ConfigError, InvisibleError, PolicyError, ProtocolError
from invisible.net.jobs_api import JobRecord, JobSpec, JobState, JobStatus
from invisible.net.pki import Identity
from invisible.node.datasets import DatasetRegistry
from invisible.node.jobkind import JobContext, JobKind
from invisible.protocols.channel import Channel

log = logging.getLogger(__name__)
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class _JobRun:
    spec: JobSpec
    requester: Identity
    channel: Channel
    status: JobStatus
    cancelled_by: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class JobExecutor:
    """Implements :class:`invisible.net.jobs_api.JobService` for one party."""

    def __init__(
        self,
        party_id: str,
        kinds: dict[str, JobKind],
        datasets: DatasetRegistry,
        open_channel: Callable[[JobSpec], Channel],
        results_dir: Path,
    ) -> None:
        self.results_dir = results_dir
        self.party_id = party_id
        self._kinds = kinds
        self._datasets = datasets
        self._open_channel = open_channel
        self._jobs: dict[str, _JobRun] = {}
        self._lock = threading.Lock()

    def _validate(self, spec: JobSpec) -> JobKind:
        if not _JOB_ID.match(spec.job_id):
            raise ProtocolError("job id must be 1-128 letters, digits, '.', '_' or '-'")
        kind = self._kinds.get(spec.kind)
        if kind is None:
            raise ConfigError(
                f"unknown job kind '{spec.kind}' (this node runs: {', '.join(sorted(self._kinds))})"
            )
        if self.party_id not in spec.parties:
            raise ConfigError(f"job '{spec.job_id}' does not list this party ('{self.party_id}')")
        kind.validate(spec, self.party_id, self._datasets)
        return kind

    def start_job(self, spec: JobSpec, requester: Identity) -> None:
        kind = self._validate(spec)
        channel = self._open_channel(spec)  # refuses a party that is not a configured peer
        with self._lock:
            if spec.job_id in self._jobs:
                raise ProtocolError(f"job '{spec.job_id}' was already started on this node")
            run = _JobRun(spec, requester, channel, JobStatus(spec.job_id, JobState.RUNNING))
            self._jobs[spec.job_id] = run
        log.info("job %s (%s) started by %s", spec.job_id, spec.kind, requester)
        context = JobContext(spec, requester, channel, self._datasets, Prg.from_os(), self.results_dir)
        threading.Thread(
            target=self._run, args=(run, kind, context), name=f"job-{spec.job_id}", daemon=True
        ).start()

    def _run(self, run: _JobRun, kind: JobKind, context: JobContext) -> None:
        started = time.perf_counter()
        status = JobStatus(run.spec.job_id, JobState.FAILED)
        try:
            outcome = kind.run(context)
            status = JobStatus(
                run.spec.job_id, JobState.FINISHED,
                record=JobRecord(
                    rows_used=outcome.rows_used, values_opened=outcome.values_opened,
                    bytes_released=sum(a.nbytes for a in outcome.arrays.values()),
                ),
                output=outcome.output, arrays=outcome.arrays,
            )
        except InvisibleError as exc:
            status.error = str(exc)
        except Exception as exc:  # a bug: report its type, never its values
            log.exception("job %s failed unexpectedly", run.spec.job_id)
            status.error = f"internal error on party '{self.party_id}' ({type(exc).__name__})"
        if status.state is JobState.FAILED and not run.cancelled_by:
            context.channel.abort()
        context.channel.close()
        stats = context.channel.stats
        status.record.bytes_sent = stats.bytes_sent
        status.record.bytes_received = stats.bytes_received
        status.record.messages_sent = stats.messages_sent
        status.record.messages_received = stats.messages_received
        status.record.duration_s = time.perf_counter() - started
        with self._lock:
            if run.cancelled_by:  # cancelled while finishing: release nothing
                status = JobStatus(run.spec.job_id, JobState.FAILED, record=status.record,
                                   error=f"job '{run.spec.job_id}' was cancelled by "
                                         f"'{run.cancelled_by}'")
            run.status = status
            run.done.set()
        log.info("job %s %s in %.3f s", run.spec.job_id, status.state.value,
                 status.record.duration_s)

    def _run_for(self, job_id: str, requester: Identity) -> _JobRun:
        with self._lock:
            run = self._jobs.get(job_id)
        if run is None:
            raise ConfigError(f"no job '{job_id}' on party '{self.party_id}'")
        if run.requester != requester:
            raise PolicyError(f"job '{job_id}' was requested by another identity")
        return run

    def job_status(self, job_id: str, requester: Identity, wait_s: float) -> JobStatus:
        run = self._run_for(job_id, requester)
        run.done.wait(timeout=wait_s)
        return run.status

    def job_output(self, job_id: str, name: str, requester: Identity) -> np.ndarray:
        run = self._run_for(job_id, requester)
        status = run.status
        if status.state is not JobState.FINISHED:
            raise ProtocolError(f"job '{job_id}' has not finished; it releases nothing")
        array = status.arrays.get(name)
        if array is None:
            raise ConfigError(f"job '{job_id}' has no output '{name}'")
        return array

    def cancel_job(self, job_id: str, requester: Identity, reason: str) -> None:
        run = self._run_for(job_id, requester)
        with self._lock:
            if run.cancelled_by:
                return
            run.cancelled_by = requester.party_id
            if run.done.is_set() and run.status.state is JobState.FINISHED:
                run.status = JobStatus(job_id, JobState.FAILED, record=run.status.record,
                                       error=f"job '{job_id}' was cancelled by '{requester.party_id}'")
        log.info("job %s cancelled by %s: %s", job_id, requester, reason)
        run.channel.interrupt(requester.party_id)

    def running(self) -> list[str]:
        with self._lock:
            return [job_id for job_id, run in self._jobs.items() if not run.done.is_set()]
