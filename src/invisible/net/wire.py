"""Encoding of channel messages into gRPC frames and back.

A message is a header (job, step, kind, dtype, shape, total byte count)
followed by raw little-endian C-order bytes in chunks. The decoder checks
the header against the receiver's cap and against itself (shape times item
size must equal the byte count) before it allocates the buffer, and checks
that exactly the declared number of bytes arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from invisible.errors import ProtocolError
from invisible.protocols.channel import ALLOWED_DTYPES, Payload
from invisible.v1 import exchange_pb2

DEFAULT_CHUNK_BYTES = 1 << 20
MAX_DIMS = 32


def make_header(job_id: str, step: str, payload: Payload) -> exchange_pb2.MessageHeader:
    if isinstance(payload, np.ndarray):
        return exchange_pb2.MessageHeader(
            job_id=job_id, step=step, kind=exchange_pb2.PAYLOAD_KIND_ARRAY,
            dtype=payload.dtype.str, shape=list(payload.shape), total_bytes=payload.nbytes,
        )
    return exchange_pb2.MessageHeader(
        job_id=job_id, step=step, kind=exchange_pb2.PAYLOAD_KIND_BYTES, total_bytes=len(payload)
    )


def payload_chunks(payload: Payload, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    if isinstance(payload, np.ndarray):
        view = payload.reshape(-1).view(np.uint8).data
    else:
        view = memoryview(payload)
    for start in range(0, len(view), chunk_bytes):
        yield bytes(view[start : start + chunk_bytes])


def encode_frames(
    job_id: str, step: str, payload: Payload, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[exchange_pb2.Frame]:
    yield exchange_pb2.Frame(header=make_header(job_id, step, payload))
    for chunk in payload_chunks(payload, chunk_bytes):
        yield exchange_pb2.Frame(chunk=chunk)


def check_header(header: exchange_pb2.MessageHeader) -> None:
    """Refuse a header whose fields contradict each other or name a forbidden dtype."""
    if not header.job_id or not header.step:
        raise ProtocolError("message header lacks a job id or step")
    if header.kind == exchange_pb2.PAYLOAD_KIND_BYTES:
        if header.dtype or header.shape:
            raise ProtocolError("a bytes message cannot carry a dtype or shape")
        return
    if header.kind != exchange_pb2.PAYLOAD_KIND_ARRAY:
        raise ProtocolError("message header has an unknown payload kind")
    if header.dtype not in ALLOWED_DTYPES:
        raise ProtocolError(f"arrays of dtype {header.dtype!r} are not accepted")
    if len(header.shape) > MAX_DIMS:
        raise ProtocolError(f"arrays of more than {MAX_DIMS} dimensions are not accepted")
    count = 1
    for dim in header.shape:
        count *= dim
    if count * np.dtype(header.dtype).itemsize != header.total_bytes:
        raise ProtocolError("message header's shape and dtype contradict its byte count")


def decode_payload(
    header: exchange_pb2.MessageHeader,
    chunks: Iterable[bytes],
    check_size: Callable[[int], None],
) -> Payload:
    """Assemble a payload from its chunks; `check_size` refuses a byte count over the cap."""
    check_header(header)
    total = header.total_bytes
    check_size(total)
    buffer = bytearray(total)
    filled = 0
    for chunk in chunks:
        end = filled + len(chunk)
        if end > total:
            raise ProtocolError("message carried more bytes than its header declared")
        buffer[filled:end] = chunk
        filled = end
    if filled != total:
        raise ProtocolError(f"message ended after {filled} of {total} declared bytes")
    if header.kind == exchange_pb2.PAYLOAD_KIND_BYTES:
        return bytes(buffer)
    return np.frombuffer(buffer, dtype=np.dtype(header.dtype)).reshape(tuple(header.shape))
