"""Shared fixtures: local federations, and one `transport` fixture over both channels.

Every test that starts nodes stops them on teardown; every gRPC call has a
deadline, and pytest-timeout bounds each test.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from invisible.coordinator.local import InProcessNodes, LocalLayout, write_local_federation
from invisible.errors import InvisibleError
from invisible.jobspec import JobSpec
from invisible.net.inprocess import InProcessHub
from invisible.protocols.channel import Channel

PARTIES = ("alpha", "beta", "gamma")
ChannelsFactory = Callable[[str], dict[str, Channel]]


class Transport:
    """Makes one channel per party for a job, over in-process queues or real gRPC."""

    def __init__(self, name: str, factory: ChannelsFactory, close: Callable[[], None]) -> None:
        self.name = name
        self.channels = factory
        self.close = close


def _inprocess(max_message_bytes: int, timeout_s: float) -> Transport:
    hub = InProcessHub(PARTIES, max_message_bytes=max_message_bytes, timeout_s=timeout_s)
    return Transport("inprocess", hub.channels, lambda: None)


def _grpc(directory: Path, max_message_bytes: int, timeout_s: float) -> Transport:
    layout = write_local_federation(
        directory, PARTIES,
        limits={"max_message_bytes": max_message_bytes, "rpc_timeout_s": timeout_s},
    )
    nodes = InProcessNodes(layout).__enter__()

    def channels(job_id: str) -> dict[str, Channel]:
        spec = JobSpec(job_id, "test", PARTIES)
        return {p: node._open_channel(spec) for p, node in nodes.nodes.items()}

    return Transport("grpc", channels, lambda: nodes.__exit__(None, None, None))


@pytest.fixture(scope="module", params=["inprocess", "grpc"])
def make_transport(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Transport]]:
    """make_transport(max_message_bytes=..., timeout_s=...) -> Transport, cached per module."""
    made: dict[tuple[int, float], Transport] = {}

    def make(max_message_bytes: int = 1 << 30, timeout_s: float = 20.0) -> Transport:
        key = (max_message_bytes, timeout_s)
        if key not in made:
            if request.param == "inprocess":
                made[key] = _inprocess(max_message_bytes, timeout_s)
            else:
                folder = tmp_path_factory.mktemp("grpc")
                made[key] = _grpc(folder, max_message_bytes, timeout_s)
        return made[key]

    yield make
    for transport in made.values():
        with contextlib.suppress(Exception):
            transport.close()


@pytest.fixture
def transport(make_transport: Callable[..., Transport]) -> Transport:
    return make_transport()


@pytest.fixture
def layout(tmp_path: Path) -> LocalLayout:
    return write_local_federation(tmp_path / "federation", PARTIES)


# --- canaries: values planted in every dataset the suite uses must never leak -------------------

#: One value in each dataset (tests/data/README.md, src/invisible/samples): a job may compute
#: with them, but no log line, error message, ledger entry or receipt may ever show one.
CANARIES = ("1357.91", "1468.02", "1579.13", "2.468013", "1.357913", "1.975319",
            "1.864213", "2.097531", "1.753197", "2.186421", "1.642097", "2.319864")
#: Where the datasets themselves live; every other file a test leaves is scanned.
_DATA_SUFFIXES = (".csv", ".gz")


def _leaked(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


@pytest.fixture(autouse=True)
def no_canary_in_logs_or_errors(caplog: pytest.LogCaptureFixture,
                                monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every log record and every error the toolkit raises during a test, checked."""
    messages: list[str] = []
    original = InvisibleError.__init__

    def recording_init(self: InvisibleError, *args: object) -> None:
        messages.extend(str(a) for a in args)
        original(self, *args)

    monkeypatch.setattr(InvisibleError, "__init__", recording_init)
    caplog.set_level(logging.DEBUG, logger="invisible")
    yield
    leaks = [m for m in messages if _leaked(m)]
    records = [r for phase in ("setup", "call") for r in caplog.get_records(phase)]
    leaks += [r.getMessage() for r in records if _leaked(r.getMessage())]
    assert leaks == [], f"a dataset's canary value appeared in: {leaks[:3]}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every file the tests left (ledgers, receipts, node logs, configs), checked at the end."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or exitstatus != 0:
        return
    base = factory.getbasetemp()
    leaks = []
    for path in base.rglob("*"):
        if path.is_file() and not path.name.endswith(_DATA_SUFFIXES):
            text = path.read_bytes().decode("latin-1")
            leaks += [f"{path.relative_to(base)}: {c}" for c in _leaked(text)]
    if leaks:
        session.exitstatus = 1
        raise pytest.UsageError(f"a dataset's canary value was written to: {leaks[:5]}")
