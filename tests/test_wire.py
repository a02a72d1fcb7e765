"""Frames of peer deliveries: chunks are written and read by hand, as protobuf would."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invisible.errors import ProtocolError
from invisible.net import wire
from invisible.v1 import exchange_pb2


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.sampled_from([1, 7, 127, 128, 300, 16384]))
def test_hand_written_frames_are_the_protobuf_encoding_and_round_trip(data, chunk):
    frames = list(wire.encode_raw_frames("job", "step", data, chunk))
    header = exchange_pb2.Frame.FromString(frames[0]).header
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    assert frames[1:] == [exchange_pb2.Frame(chunk=p).SerializeToString() for p in pieces]
    parsed = [wire.parse_raw_frame(f) for f in frames[1:]]
    assert all(isinstance(p, memoryview) for p in parsed)
    assert wire.decode_payload(header, parsed, lambda n: None) == data


def test_arrays_round_trip_through_raw_frames():
    array = np.arange(200_000, dtype=np.uint64).reshape(400, 500) * np.uint64(0x9E3779B97F4A7C15)
    frames = [wire.parse_raw_frame(f) for f in wire.encode_raw_frames("j", "s", array, 1 << 16)]
    header = frames[0]
    assert isinstance(header, exchange_pb2.MessageHeader)
    assert np.array_equal(wire.decode_payload(header, frames[1:], lambda n: None), array)


def test_other_encodings_of_a_chunk_are_read_by_protobuf():
    # A chunk field followed by an unknown field: valid protobuf, not our own layout.
    raw = exchange_pb2.Frame(chunk=b"abc").SerializeToString() + b"\x18\x01"
    assert bytes(wire.parse_raw_frame(raw)) == b"abc"


@pytest.mark.parametrize("raw", [b"", b"\x12\x05ab", b"\xff\xff\xff", b"\x12" + b"\xff" * 12])
def test_malformed_frames_are_refused(raw):
    with pytest.raises(ProtocolError, match="Frame|neither"):
        wire.parse_raw_frame(raw)


def test_a_chunk_longer_than_declared_is_refused():
    header = wire.make_header("j", "s", b"abcd")
    chunks = [memoryview(b"abc"), memoryview(b"de")]
    with pytest.raises(ProtocolError, match="more bytes"):
        wire.decode_payload(header, chunks, lambda n: None)
