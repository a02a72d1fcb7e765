"""Runs jobs on a party node, metered: prepare (authorise, reserve), run, record.

1. ``start_job`` prepares: the job is validated completely (id, kind,
   parties, parameters, datasets), its use of data is checked against the
   dataset's policy, and quota is reserved in the ledger — one atomic step.
   Nothing reads data values before the policy allowed the job, and the
   answer never depends on them. A refusal is recorded and raised, naming
   the rule.
2. ``run_job`` starts the prepared job in a worker thread, once the
   coordinator saw every party accept; a job its data checks refused ends
   there, ``refused`` and charged. A prepared job that is not run within
   the deadline is cancelled and gives its reservation back.
3. The job ends ``finished`` (rows, bytes, values opened, outputs released
   and to whom, duration), ``failed`` or ``cancelled``; that signed entry is
   the requester's receipt. A failing job tells its peers, so they fail at
   once, and releases nothing.
4. After a finished job, the node announces its new chain head to the job's
   peers, which countersign it (see :mod:`invisible.node.witness`).

Only the coordinator identity that started a job may run it, read its
status, fetch its output or cancel it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from invisible.crypto.prg import Prg
from invisible.errors import (
    ConfigError,
    InvisibleError,
    JobAbortedError,
    NodeBusyError,
    PolicyError,
    ProtocolError,
)
from invisible.jobspec import ArrayInfo, JobRecord, JobSpec, JobState, JobStatus, Started
from invisible.kinds.alignments import AlignmentStore
from invisible.kinds.base import JobContext, JobOutcome
from invisible.kinds.models import ModelStore
from invisible.kinds.registry import AnyKind
from invisible.metering.approvals import iso
from invisible.metering.meter import JobMeta, Meter
from invisible.metering.policy import Refusal
from invisible.net.pki import Identity
from invisible.node.admission import Admission, Admitted
from invisible.node.allowance import Allowance
from invisible.node.approvals import ApprovalDesk
from invisible.node.datasets import DatasetRegistry
from invisible.protocols.channel import Channel
from invisible.text import printable

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Ended jobs whose status a node keeps answering for (the oldest are forgotten).
MAX_FINISHED_JOBS = 1000
#: The longest a job not held here may stay prepared while its requester waits for
#: approvals at other parties (its status calls keep it); and how many jobs one requester
#: may have prepared here at once (each holds a reservation and a timer).
MAX_PREPARED_S = 24 * 3600.0
MAX_PREPARED_PER_REQUESTER = 64


class _Phase(Enum):
    PREPARED = "prepared"
    RUNNING = "running"
    DONE = "done"


@dataclass
class _JobRun:
    spec: JobSpec
    requester: Identity
    admitted: Admitted
    status: JobStatus
    #: Why the job was refused: its data checks (decided at prepare, told when it runs) or
    #: the bound check.
    refusal: Refusal | None = None
    phase: _Phase = _Phase.PREPARED
    cancelled_by: str = ""
    timer: threading.Timer | None = None
    done: threading.Event = field(default_factory=threading.Event)
    #: Set when the job ends or reports progress (wakes a waiting status request).
    changed: threading.Event = field(default_factory=threading.Event)
    finished_at: float = 0.0  # time.monotonic() when the job ended
    outputs_dropped: bool = False
    #: The approvals a held job runs on (for its receipt).
    approvals: list[dict[str, str]] = field(default_factory=list)
    #: Its policy held it for approval here (Run is refused unless the desk lets it go).
    held: bool = False
    #: time.monotonic() when it was prepared (a requester's status calls keep a job that
    #: waits for approvals elsewhere prepared, up to MAX_PREPARED_S after this).
    prepared_at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.refusal = self.refusal or self.admitted.refusal

    @property
    def kind(self) -> AnyKind:
        return self.admitted.kind

    @property
    def params(self) -> Any:
        return self.admitted.params

    @property
    def meta(self) -> JobMeta:
        return self.admitted.meta

    @property
    def channel(self) -> Channel:
        return self.admitted.channel



class JobExecutor:
    """Implements :class:`invisible.net.jobs_api.JobService` for one party."""

    def __init__(
        self,
        party_id: str,
        kinds: dict[str, AnyKind],
        datasets: DatasetRegistry,
        open_channel: Callable[[JobSpec], Channel],
        results_dir: Path,
        meter: Meter,
        run_deadline_s: float = 60.0,
        announce_head: Callable[[Sequence[str]], None] = lambda peers: None,
        expect_heads: Callable[[Sequence[str]], None] = lambda peers: None,
        check_peers: Callable[[Sequence[str]], None] = lambda peers: None,
        output_retention_s: float = 600.0,
        refused_burst: int = 60,
        refused_per_s: float = 1.0,
        alignments: AlignmentStore | None = None,
        dealers: Sequence[str] = (),
        revoked: Callable[[bytes], bool] = lambda certificate: False,
    ) -> None:
        self._announce_head = announce_head
        #: The federation's dealers: what they send a job is its correlated randomness.
        self._dealers = tuple(dealers)
        #: Told the peers of every prepared job: each may announce its chain head once.
        self._expect_heads = expect_heads
        #: Released arrays are dropped this long after their job ends, fetched or not.
        self._output_retention_s = output_retention_s
        self.party_id = party_id
        self.results_dir = results_dir
        #: Where psi jobs keep their alignments (default: beside the results).
        self.alignments = alignments or AlignmentStore(results_dir / "alignments")
        #: Where training jobs keep this node's part of their models.
        self.models = ModelStore(results_dir / "models")
        self.meter = meter
        self._datasets = datasets
        self._run_deadline_s = run_deadline_s
        self._admission = Admission(party_id, kinds, datasets, meter, open_channel, check_peers)
        self._jobs: dict[str, _JobRun] = {}
        #: Job ids being prepared: taken before anything else happens for them.
        self._starting: set[str] = set()
        #: How many refused requests each requester may still make (refilled over time).
        self._refused = Allowance(refused_burst, refused_per_s)
        self._lock = threading.Lock()
        #: How many jobs each requester has prepared and not yet run or ended.
        self._prepared: Counter[str] = Counter()
        #: Jobs held for approval (see invisible.node.approvals).
        self.approvals = ApprovalDesk(party_id, meter, self._cancel_held, self._wake, revoked)

    # -- 1. prepare ---------------------------------------------------------------------------

    def start_job(self, spec: JobSpec, requester: Identity) -> Started:
        """Prepare a job: its id is taken, then :class:`~invisible.node.admission.Admission`
        decides it (policy first, then the data, then the reservation; the answer never
        depends on the data). Returns whether this party's policy refuses values beyond
        the job's bound (it must then be run with the bound check: a fact of the policy,
        not of the data), and until when its policy holds the job for approval.

        A requester whose requests were refused too often lately is told the
        node is busy, without a ledger entry, until its allowance refills.
        """
        who = requester.party_id
        if not self._refused.allows(who):
            raise NodeBusyError(f"requester '{who}' had {self._refused.burst} requests refused "
                                "here lately; it may ask again in a few seconds")
        try:
            return self._start_job(spec, requester)
        except InvisibleError as exc:
            if exc.receipts:  # a refusal, recorded in the ledger
                self._refused.spend(who)
            raise

    def _start_job(self, spec: JobSpec, requester: Identity) -> Started:
        who = requester.party_id
        if not _JOB_ID.match(spec.job_id):
            self._admission.refuse_request(JobMeta("-", who, spec.kind), "bad job id",
                                 "job id must be 1-128 letters, digits, '.', '_' or '-'")
        self.drop_expired_outputs()
        with self._lock:
            prepared = self._prepared[who]
        if prepared >= MAX_PREPARED_PER_REQUESTER:
            raise PolicyError(f"requester '{who}' has {prepared} jobs prepared and not run "
                                f"on party '{self.party_id}'; it may start another when one of "
                                "them runs or ends")
        with self._lock:  # the id is taken before anything else happens for this job
            taken = spec.job_id in self._jobs or spec.job_id in self._starting
            if not taken:
                self._starting.add(spec.job_id)
        if not taken and self.meter.store.knows_job(spec.job_id):  # ids are never reused
            with self._lock:
                self._starting.discard(spec.job_id)
            taken = True
        if taken:
            self._admission.refuse_request(JobMeta("-", who, spec.kind), f"job id '{spec.job_id}' used "
                                 "before", f"job id '{spec.job_id}' was used before on this "
                                 "node; a job id is used once for the life of a ledger")
        try:
            admitted = self._admission.admit(spec, who)
            run = _JobRun(spec, requester, admitted, JobStatus(spec.job_id, JobState.RUNNING))
            try:  # held before Run can find it: a Run racing the Start finds it held
                deadline = self.approvals.hold(spec, admitted.meta)
            except BaseException:
                self._cancel_prepared(run, "it could not be held for approval")
                raise
            run.held = deadline is not None
            wait_s = self._run_deadline_s if deadline is None else deadline - time.time()
            with self._lock:
                self._jobs[spec.job_id] = run
                self._prepared[who] += 1
                run.timer = threading.Timer(wait_s, self._expire, (run,))
                run.timer.daemon = True
                run.timer.start()
        finally:
            with self._lock:
                self._starting.discard(spec.job_id)
        self._expect_heads(admitted.channel.peers)
        log.info("job %s (%s) accepted for %s", spec.job_id, spec.kind, requester)
        return Started(admitted.refuses_out_of_bound,
                       "" if deadline is None else iso(deadline))

    def _left_prepared(self, run: _JobRun) -> None:
        """A job left the prepared phase (call under the lock)."""
        who = run.requester.party_id
        if run.spec.job_id in self._jobs:  # one that never was prepared here was not counted
            self._prepared[who] -= 1
            if self._prepared[who] <= 0:
                del self._prepared[who]

    def _expire(self, run: _JobRun) -> None:
        self._cancel_prepared(run, self.approvals.expired(run.spec.job_id))

    def _cancel_held(self, job_id: str, reason: str, by: str) -> None:
        with self._lock:
            run = self._jobs.get(job_id)
        if run is not None:
            self._cancel_prepared(run, reason, by)

    def _wake(self, job_id: str) -> None:
        with self._lock:
            run = self._jobs.get(job_id)
        if run is not None:
            run.changed.set()

    def _cancel_prepared(self, run: _JobRun, reason: str, by: str = "") -> bool:
        """Cancel a job that never ran: its reservation is given back. True if it was one."""
        self.approvals.forget(run.spec.job_id)  # whatever happens below: nothing runs it
        with self._lock:
            if run.phase is not _Phase.PREPARED:
                return False
            run.phase = _Phase.DONE
            self._left_prepared(run)
        if run.timer is not None:
            run.timer.cancel()
        entry = self.meter.close(run.meta, "cancelled", {}, released=True, reason=reason)
        run.channel.close()
        run.status = JobStatus.failed(run.spec.job_id,
                                      f"job '{run.spec.job_id}' was cancelled: {reason}",
                                      receipts=[entry.to_json()], aborted_by=by)
        run.done.set()
        run.changed.set()
        log.info("job %s cancelled before it ran: %s", run.spec.job_id, reason)
        return True

    # -- 2. run ---------------------------------------------------------------------------------

    def run_job(self, job_id: str, requester: Identity, check_bounds: bool = False) -> None:
        """Run a prepared job; `check_bounds`: some party's policy asked for the bound check
        (refused, before anything runs, if this party's did and the requester left it out)."""
        run = self._run_for(job_id, requester)
        if run.admitted.refuses_out_of_bound and not check_bounds:
            raise PolicyError(f"job '{job_id}': the policy of party '{self.party_id}' refuses "
                              "values beyond the bound, and the job was not run with the "
                              "bound check its Start asked for")
        with self._lock:
            if run.phase is not _Phase.PREPARED:
                raise ProtocolError(f"job '{job_id}' is not waiting to run")
            run.approvals = self.approvals.take(job_id, run.held)  # refused unless approved
            run.phase = _Phase.RUNNING
            self._left_prepared(run)
        if run.timer is not None:
            run.timer.cancel()
        context = JobContext(run.spec, requester.party_id, run.channel, self._datasets,
                             Prg.from_os(), self.results_dir, check_bounds,
                             self.meter.policy_of(run.meta), self.alignments,
                             models=self.models,
                             progress=lambda done, total: self._progress(run, done, total))
        threading.Thread(target=self._run, args=(run, context), name=f"job-{job_id}",
                         daemon=True).start()

    def _progress(self, run: _JobRun, done: int, total: int) -> None:
        """A running job's progress, in its status; a waiting status request returns."""
        with self._lock:
            if run.status.state is JobState.RUNNING:
                run.status = replace(run.status, output={"progress": [int(done), int(total)]})
        run.changed.set()

    def _run(self, run: _JobRun, context: JobContext) -> None:
        started, cpu_started = time.perf_counter(), time.thread_time()
        outcome: JobOutcome | None = None
        error, aborted_by = "", ""
        try:
            if run.refusal is not None:  # its data checks refused it: charged, as if it ran
                raise run.refusal
            outcome = run.kind.run(run.params, context)
        except InvisibleError as exc:
            error = str(exc)
            if isinstance(exc, Refusal):  # its data refused it here: charged, as if it ran
                run.refusal = exc
            if isinstance(exc, JobAbortedError) and exc.by != self.party_id:
                aborted_by = exc.by  # this node stopping is a failure of its own
        except Exception as exc:  # a bug: report its type, never its values
            log.exception("job %s failed unexpectedly", run.spec.job_id)
            error = f"internal error on party '{self.party_id}' ({type(exc).__name__})"
        if outcome is None and not run.cancelled_by:  # tell the peers that do not know
            run.channel.abort(spare=run.refusal.alike if run.refusal else (aborted_by,))
        stats = run.channel.stats
        record = JobRecord(
            bytes_sent=stats.bytes_sent, bytes_received=stats.bytes_received,
            messages_sent=stats.messages_sent, messages_received=stats.messages_received,
            duration_s=time.perf_counter() - started, rounds=stats.rounds,
            tuples=sum(stats.received_from.get(d, 0) for d in self._dealers) // 8,
            ciphertext_ops=outcome.ciphertext_ops if outcome is not None else 0,
            cpu_s=round(time.thread_time() - cpu_started, 6),
        )
        try:
            status = self._close(run, outcome, record, error, aborted_by)
        except Exception as exc:  # the ledger is gone (the node stopped under the job)
            log.warning("job %s: its end could not be recorded (%s); it shows as interrupted "
                        "at the node's next start", run.spec.job_id, type(exc).__name__)
            status = JobStatus.failed(run.spec.job_id, f"job '{run.spec.job_id}' ended while "
                                      f"party '{self.party_id}' was stopping; nothing was "
                                      "released", record=record)
        with self._lock:
            run.status = status
            run.phase = _Phase.DONE
            run.finished_at = time.monotonic()
        run.done.set()
        run.changed.set()
        log.info("job %s %s in %.3f s", run.spec.job_id, status.state.value, record.duration_s)
        run.channel.close()
        self._announce_head(run.channel.peers)  # after failed jobs too: their entries count

    def _close(self, run: _JobRun, outcome: JobOutcome | None, record: JobRecord, error: str,
               aborted_by: str) -> JobStatus:
        """Record how the job ended in the ledger; the status that says so."""
        if outcome is not None and not run.cancelled_by:
            # This node's own records, written with the receipt (the terminal entry below).
            # `clipped` even for 0: the entries' count (the receipt's seq) must not tell
            # whether any value was clipped.
            notes = [("clipped", {"values": outcome.clipped})] if run.kind.bounds_values else []
            notes += list(outcome.notes.items())
            record.rows_used = outcome.rows_used
            record.values_opened = outcome.values_opened
            record.bytes_released = sum(a.nbytes for a in outcome.arrays.values())
            entry = self.meter.close(run.meta, "finished", record.__dict__, rows=record.rows_used,
                                     outputs=self._released(run, outcome),
                                     openings=outcome.openings, notes=notes,
                                     **self._consents(run))
            if run.meta.rows_private:  # the requester sees what the receipt says: nothing
                record.rows_used = record.values_opened = 0  # that counts the rows
                outcome.output.pop("openings", None)
            return JobStatus(run.spec.job_id, JobState.FINISHED, record=record,
                             output=outcome.output, arrays=outcome.arrays,
                             receipts=[entry.to_json()])
        if run.refusal is not None and not run.cancelled_by:
            entry = self.meter.refuse_run(run.meta, run.refusal, record.__dict__,
                                          **self._consents(run))
            return JobStatus.failed(run.spec.job_id, error, record=record,
                                    receipts=[entry.to_json()])
        event = "cancelled" if run.cancelled_by else "failed"
        if run.cancelled_by:
            error = f"job '{run.spec.job_id}' was cancelled by '{run.cancelled_by}'"
            aborted_by = run.cancelled_by
        entry = self.meter.close(run.meta, event, record.__dict__, error=error, released=False,
                                 **self._consents(run))
        return JobStatus.failed(run.spec.job_id, error, record=record,
                                receipts=[entry.to_json()], aborted_by=aborted_by)

    def stop(self, grace_s: float) -> None:
        """Cancel the jobs that have not run, interrupt those running, and wait up to
        `grace_s` for them to record how they ended (before the node closes its ledger)."""
        with self._lock:
            runs = [r for r in self._jobs.values() if r.phase is not _Phase.DONE]
        for run in runs:
            if not self._cancel_prepared(run, "the node is stopping"):
                run.channel.interrupt(self.party_id)
        deadline = time.monotonic() + grace_s
        for run in runs:
            if not run.done.wait(max(0.0, deadline - time.monotonic())):
                log.warning("job %s still running as the node stops", run.spec.job_id)

    @staticmethod
    def _consents(run: _JobRun) -> dict[str, Any]:
        """The approvals a job ran on, for its terminal entry (none if it was not held)."""
        return {"approvals": run.approvals} if run.approvals else {}

    @staticmethod
    def _released(run: _JobRun, outcome: JobOutcome) -> dict[str, object]:
        recipient = outcome.recipient or run.requester.party_id
        return {"to": recipient, "arrays": {n: int(a.size) for n, a in outcome.arrays.items()},
                "values_opened": outcome.values_opened}

    # -- requests from the coordinator -----------------------------------------------------------

    def _run_for(self, job_id: str, requester: Identity) -> _JobRun:
        with self._lock:
            run = self._jobs.get(job_id)
        if run is None:
            raise ConfigError(f"no job '{job_id}' on party '{self.party_id}'")
        if run.requester != requester:
            raise PolicyError(f"job '{job_id}' was requested by another identity")
        return run

    def job_status(self, job_id: str, requester: Identity, wait_s: float) -> JobStatus:
        """The job's status once it ends or reports progress, or after `wait_s`."""
        run = self._run_for(job_id, requester)
        if not run.done.is_set():
            run.changed.wait(timeout=wait_s)
            run.changed.clear()
        with self._lock:
            status, prepared = run.status, run.phase is _Phase.PREPARED
        if prepared and run.held and self.approvals.awaiting(job_id):
            return replace(status, state=JobState.AWAITING_APPROVAL)
        if prepared and not run.held:
            self._keep_prepared(run)
        return status

    def _keep_prepared(self, run: _JobRun) -> None:
        """Its requester asked after a prepared job (it waits for approvals at another
        party): its deadline to run moves on, up to MAX_PREPARED_S after it was prepared."""
        left = MAX_PREPARED_S - (time.monotonic() - run.prepared_at)
        with self._lock:
            if run.phase is not _Phase.PREPARED or run.timer is None or left <= 0:
                return
            run.timer.cancel()
            run.timer = threading.Timer(min(self._run_deadline_s, left), self._expire, (run,))
            run.timer.daemon = True
            run.timer.start()

    def job_output(self, job_id: str, name: str, requester: Identity) -> np.ndarray:
        run = self._run_for(job_id, requester)
        self.drop_expired_outputs()
        status = run.status
        if status.state is not JobState.FINISHED:
            raise ProtocolError(f"job '{job_id}' has not finished; it releases nothing")
        if run.outputs_dropped:
            raise ConfigError(
                f"the outputs of job '{job_id}' were dropped {self._output_retention_s:g} s "
                f"after it finished (limits.output_retention_s)")
        array = status.arrays.get(name)
        if array is None:
            raise ConfigError(f"job '{job_id}' has no output '{name}'")
        return array

    def drop_expired_outputs(self) -> int:
        """Drop the released arrays of jobs that ended longer ago than the retention time.

        Called when a job starts and when an output is asked for, so a node's
        memory holds at most the outputs of the jobs of the last retention
        period. Returns how many jobs' outputs were dropped.
        """
        cutoff = time.monotonic() - self._output_retention_s
        dropped = 0
        with self._lock:
            for run in self._jobs.values():
                if run.phase is _Phase.DONE and run.status.arrays and not run.outputs_dropped \
                        and run.finished_at <= cutoff:
                    run.status = replace(run.status, arrays={}, array_infos={
                        name: ArrayInfo.of(array) for name, array in run.status.arrays.items()})
                    run.outputs_dropped = True
                    dropped += 1
            self._forget_oldest_finished()
        if dropped:
            log.info("dropped the outputs of %d job(s) older than %g s", dropped,
                     self._output_retention_s)
        return dropped

    def _forget_oldest_finished(self) -> None:
        """Keep the status of at most MAX_FINISHED_JOBS ended jobs (call under the lock): a
        node's memory stays bounded over months; the ledger keeps every job for ever."""
        done = [job_id for job_id, run in self._jobs.items() if run.phase is _Phase.DONE]
        for job_id in done[:max(0, len(done) - MAX_FINISHED_JOBS)]:  # dicts keep start order
            del self._jobs[job_id]

    def cancel_job(self, job_id: str, requester: Identity, reason: str) -> None:
        run = self._run_for(job_id, requester)
        reason = printable(reason, 200)
        if self._cancel_prepared(run, f"cancelled by '{requester.party_id}': {reason}",
                                 requester.party_id):
            return
        with self._lock:
            if run.cancelled_by or run.phase is _Phase.DONE:
                if run.phase is _Phase.DONE and run.status.state is JobState.FINISHED:
                    run.status = JobStatus.failed(
                        job_id, f"job '{job_id}' was cancelled by '{requester.party_id}'",
                        record=run.status.record, receipts=run.status.receipts,
                        aborted_by=requester.party_id)
                return
            run.cancelled_by = requester.party_id
        log.info("job %s cancelled by %s: %s", job_id, requester, reason)
        run.channel.interrupt(requester.party_id)

    def running(self) -> list[str]:
        with self._lock:
            return [job_id for job_id, run in self._jobs.items() if run.phase is not _Phase.DONE]
