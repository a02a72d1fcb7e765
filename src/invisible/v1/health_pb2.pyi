from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthCheckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthCheckResponse(_message.Message):
    __slots__ = ("status", "party_id", "role", "version", "datasets", "certificate_days_left", "ca_days_left", "revocation_list_number", "revoked_certificates", "usable_columns")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[HealthCheckResponse.Status]
        STATUS_SERVING: _ClassVar[HealthCheckResponse.Status]
        STATUS_STOPPING: _ClassVar[HealthCheckResponse.Status]
    STATUS_UNSPECIFIED: HealthCheckResponse.Status
    STATUS_SERVING: HealthCheckResponse.Status
    STATUS_STOPPING: HealthCheckResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_DAYS_LEFT_FIELD_NUMBER: _ClassVar[int]
    CA_DAYS_LEFT_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_LIST_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REVOKED_CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    USABLE_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    status: HealthCheckResponse.Status
    party_id: str
    role: str
    version: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    certificate_days_left: float
    ca_days_left: float
    revocation_list_number: int
    revoked_certificates: int
    usable_columns: _containers.RepeatedCompositeFieldContainer[DatasetColumns]
    def __init__(self, status: _Optional[_Union[HealthCheckResponse.Status, str]] = ..., party_id: _Optional[str] = ..., role: _Optional[str] = ..., version: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ..., certificate_days_left: _Optional[float] = ..., ca_days_left: _Optional[float] = ..., revocation_list_number: _Optional[int] = ..., revoked_certificates: _Optional[int] = ..., usable_columns: _Optional[_Iterable[_Union[DatasetColumns, _Mapping]]] = ...) -> None: ...

class DatasetColumns(_message.Message):
    __slots__ = ("dataset", "columns")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dataset: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ...) -> None: ...
