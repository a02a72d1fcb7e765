from invisible.v1 import exchange_pb2 as _exchange_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_FINISHED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_AWAITING_APPROVAL: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_FINISHED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_AWAITING_APPROVAL: JobState

class JobSpec(_message.Message):
    __slots__ = ("job_id", "kind", "parties", "params_json", "kind_version")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    KIND_VERSION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    kind: str
    parties: _containers.RepeatedScalarFieldContainer[str]
    params_json: str
    kind_version: int
    def __init__(self, job_id: _Optional[str] = ..., kind: _Optional[str] = ..., parties: _Optional[_Iterable[str]] = ..., params_json: _Optional[str] = ..., kind_version: _Optional[int] = ...) -> None: ...

class StartJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class StartJobResponse(_message.Message):
    __slots__ = ("job_id", "checks_bounds", "approval_deadline")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKS_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    checks_bounds: bool
    approval_deadline: str
    def __init__(self, job_id: _Optional[str] = ..., checks_bounds: _Optional[bool] = ..., approval_deadline: _Optional[str] = ...) -> None: ...

class RunJobRequest(_message.Message):
    __slots__ = ("job_id", "check_bounds")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CHECK_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    check_bounds: bool
    def __init__(self, job_id: _Optional[str] = ..., check_bounds: _Optional[bool] = ...) -> None: ...

class RunJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobRecord(_message.Message):
    __slots__ = ("rows_used", "bytes_sent", "bytes_received", "messages_sent", "messages_received", "values_opened", "duration_s", "bytes_released", "rounds", "tuples", "ciphertext_ops", "cpu_s")
    ROWS_USED_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_SENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    VALUES_OPENED_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    BYTES_RELEASED_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    TUPLES_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_OPS_FIELD_NUMBER: _ClassVar[int]
    CPU_S_FIELD_NUMBER: _ClassVar[int]
    rows_used: int
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int
    values_opened: int
    duration_s: float
    bytes_released: int
    rounds: int
    tuples: int
    ciphertext_ops: int
    cpu_s: float
    def __init__(self, rows_used: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., messages_sent: _Optional[int] = ..., messages_received: _Optional[int] = ..., values_opened: _Optional[int] = ..., duration_s: _Optional[float] = ..., bytes_released: _Optional[int] = ..., rounds: _Optional[int] = ..., tuples: _Optional[int] = ..., ciphertext_ops: _Optional[int] = ..., cpu_s: _Optional[float] = ...) -> None: ...

class JobStatusRequest(_message.Message):
    __slots__ = ("job_id", "wait_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    wait_ms: int
    def __init__(self, job_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class JobStatusResponse(_message.Message):
    __slots__ = ("job_id", "state", "error", "record", "output_json", "output_arrays", "receipts_json", "aborted_by")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ARRAYS_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_JSON_FIELD_NUMBER: _ClassVar[int]
    ABORTED_BY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    error: str
    record: JobRecord
    output_json: str
    output_arrays: _containers.RepeatedCompositeFieldContainer[_exchange_pb2.MessageHeader]
    receipts_json: _containers.RepeatedScalarFieldContainer[str]
    aborted_by: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., error: _Optional[str] = ..., record: _Optional[_Union[JobRecord, _Mapping]] = ..., output_json: _Optional[str] = ..., output_arrays: _Optional[_Iterable[_Union[_exchange_pb2.MessageHeader, _Mapping]]] = ..., receipts_json: _Optional[_Iterable[str]] = ..., aborted_by: _Optional[str] = ...) -> None: ...

class FetchOutputRequest(_message.Message):
    __slots__ = ("job_id", "name")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PendingApprovalsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HeldJob(_message.Message):
    __slots__ = ("spec", "spec_digest", "requester", "dataset", "columns", "recipient", "rho", "deadline", "rules_json")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SPEC_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    RULES_JSON_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    spec_digest: str
    requester: str
    dataset: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    recipient: str
    rho: float
    deadline: str
    rules_json: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., spec_digest: _Optional[str] = ..., requester: _Optional[str] = ..., dataset: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., recipient: _Optional[str] = ..., rho: _Optional[float] = ..., deadline: _Optional[str] = ..., rules_json: _Optional[str] = ...) -> None: ...

class PendingApprovalsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[HeldJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[HeldJob, _Mapping]]] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("decision_json", "signature")
    DECISION_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    decision_json: str
    signature: bytes
    def __init__(self, decision_json: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("receipt_json", "state")
    RECEIPT_JSON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    receipt_json: str
    state: JobState
    def __init__(self, receipt_json: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...
