"""Whether a job may be prepared on this node, and on what terms: policy first.

:meth:`Admission.admit` takes a request through the steps of
:meth:`invisible.node.executor.JobExecutor.start_job` that decide it:

1. the peers (none whose chain went back on a head countersigned here);
2. the request itself: kind and version, parameters, parties — nothing is read;
3. the policy against the declared use (requester, kind, columns,
   recipient): a refusal here depends on the request and the policy only;
4. only for an allowed job, the data: rows, the smallest released cell,
   data-dependent problems;
5. in one ledger transaction, the quota.

Every refusal is recorded in the ledger and raised with its entry as the
receipt. The data checks of step 4 (the k threshold, the kind's problems)
are decided here but returned, not raised: they are told when the job is
run, charged, so that the answer to Start never depends on the data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from invisible.errors import ConfigError, PolicyError, ProtocolError
from invisible.jobspec import JobSpec
from invisible.kinds.base import DeclaredUse
from invisible.kinds.registry import AnyKind, find_kind
from invisible.metering.meter import JobMeta, Meter
from invisible.metering.policy import Refusal, UseRequest
from invisible.node.datasets import DatasetRegistry
from invisible.protocols.channel import Channel
from invisible.text import printable


@dataclass(frozen=True)
class Admitted:
    """A job accepted here: what it is, its reservation, and the terms it runs on."""

    kind: AnyKind
    #: The job's parameters, parsed and checked by its kind.
    params: Any
    meta: JobMeta
    channel: Channel
    #: The data checks' verdict, told only when the job is run.
    refusal: Refusal | None
    #: This party's policy refuses values beyond the job's bound (the job needs the check).
    refuses_out_of_bound: bool


class Admission:
    """The checks that decide whether a job is prepared here (see the module docstring)."""

    def __init__(self, party_id: str, kinds: dict[str, AnyKind], datasets: DatasetRegistry,
                 meter: Meter, open_channel: Callable[[JobSpec], Channel],
                 check_peers: Callable[[Sequence[str]], None]) -> None:
        self.party_id = party_id
        self.meter = meter
        self._kinds = kinds
        self._datasets = datasets
        self._open_channel = open_channel
        #: Raises for a job with a peer this node must not run jobs with.
        self._check_peers = check_peers

    def refuse_request(self, meta: JobMeta, detail: str, message: str) -> NoReturn:
        """Refuse an invalid request, recorded (under job id '-' when the id itself is
        the problem: a refusal must not look like an end of the job that owns the id)."""
        meta = replace(meta, kind=printable(meta.kind, 64))
        error = ProtocolError(message)
        error.receipts = (self.meter.refuse(meta, "invalid-request", detail).to_json(),)
        raise error

    def admit(self, spec: JobSpec, who: str) -> Admitted:
        """Steps 1-5 (the id was checked by the caller); raises a recorded refusal."""
        try:
            self._check_peers([p for p in spec.parties if p != self.party_id])
        except PolicyError as exc:
            exc.receipts = (self.meter.refuse(JobMeta(spec.job_id, who, printable(spec.kind, 64)),
                                              "peer-chain", str(exc)).to_json(),)
            raise
        try:
            kind, params, declared = self._declare(spec)
            channel = self._open_channel(spec)  # refuses a party that is not a configured peer
        except (ConfigError, ProtocolError) as exc:
            exc.receipts = (self.meter.refuse(JobMeta(spec.job_id, who, printable(spec.kind, 64)),
                                              "invalid-request", printable(str(exc), 500)).to_json(),)
            raise
        try:
            meta, refusal = self._admit_use(spec, who, kind, params, declared)
        except BaseException:  # a refusal, or the ledger failing: the job's inbox goes
            channel.close()
            raise
        return Admitted(kind, params, meta, channel, refusal,
                        kind.bounds_values and self.meter.refuses_out_of_bound(meta))

    def _declare(self, spec: JobSpec) -> tuple[AnyKind, Any, DeclaredUse | None]:
        """The kind, the checked parameters and the declared use: nothing reads data."""
        kind = find_kind(spec.kind, spec.version, self._kinds)
        if self.party_id not in spec.parties:
            raise ConfigError(f"job '{spec.job_id}' does not list this party ('{self.party_id}')")
        params = kind.parse(spec)
        return kind, params, kind.declare(params, self.party_id)

    def _admit_use(self, spec: JobSpec, who: str, kind: AnyKind, params: Any,
                   declared: DeclaredUse | None) -> tuple[JobMeta, Refusal | None]:
        """Steps 3-5; the job's ledger view once reserved, and the verdict of its data
        checks (told when it is run)."""
        if declared is None:  # the node's own policy for jobs that use no data
            meta = JobMeta(spec.job_id, who, spec.kind)
            self.meter.admit(meta, traffic=kind.traffic(params, self.party_id))
            return meta, None
        try:
            alignment = self._datasets.alignment_for(declared.dataset, who)
            if alignment is not None and not set(alignment.parties) <= set(spec.parties):
                raise ConfigError(f"a job on alignment '{alignment.name}' must include every "
                                  f"party that made it ({', '.join(alignment.parties)})")
            if alignment is not None and declared.rho and not alignment.size_released:
                raise ConfigError(f"a job with a privacy cost on alignment '{alignment.name}' "
                                  "needs its size released by the psi job that made it "
                                  "(release_size): differential privacy here takes the row "
                                  "count as public, and the job releases it")
        except ConfigError as exc:  # no such alignment, expired, or parties left out
            exc.receipts = (self.meter.refuse(JobMeta(spec.job_id, who, spec.kind),
                                              "invalid-request", str(exc)).to_json(),)
            raise
        # An alignment's own dataset governs it; its size stays out of receipts unless the
        # psi job released it.
        source = alignment.dataset if alignment is not None else declared.dataset
        meta = JobMeta(spec.job_id, who, spec.kind, UseRequest(
            spec.job_id, who, spec.kind, source, declared.columns, 0, None,
            declared.recipient, declared.requester_too, declared.two_party, declared.group,
            declared.rho),
            rows_private=alignment is not None and not alignment.size_released)
        self.meter.authorise(meta)  # raises a recorded Refusal
        try:
            measured = kind.plan(params, self.party_id, self._datasets)
        except ConfigError as exc:  # the dataset's declaration, never its values
            exc.receipts = (self.meter.refuse(meta, "invalid-request", str(exc)).to_json(),)
            raise
        assert meta.use is not None and measured is not None
        meta = replace(meta, use=replace(meta.use, rows=measured.rows,
                                         smallest_cell=measured.smallest_cell))
        self.meter.admit(meta)  # raises a recorded Refusal
        return meta, self.meter.data_refusal(meta, measured.problem)

