"""Aligned datasets: a party's own rows of a set intersection, kept at its node, by name.

A ``psi`` job leaves at every party an **alignment**: the party's own row
indices of the intersection, in the order all parties agreed (the same at
every party), under a name (the job id, or one the requester gave). Later
jobs name it in place of a dataset. It never leaves the node: it is one
file, ``<name>.npz`` in the node's alignments folder, written whole
(scratch file, then rename), so it survives restarts. It expires after the
days its dataset's policy allows; an expired alignment is refused and
deleted when next looked at.

An alignment is its requester's: another requester naming it is told that
there is no such alignment. A job on it must include every party that made
it (statistics on two intersections, one with a party more, would tell the
people in one and not the other). It keeps a hash of the ids at its rows,
checked each time it is used: if the dataset's file changed since the psi
job (rows re-sorted, added or removed), the rows would pair other people
across parties, so the job is refused. Its size reaches the requester only
if the psi job released it (`size_released`): otherwise later jobs on it
keep the number of rows they touched out of their receipts (it is in the
node's own ledger).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from invisible.errors import ConfigError

#: A job names an alignment where it would name a dataset as "@" + the alignment's name.
ALIGNMENT_PREFIX = "@"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TIME = "%Y-%m-%dT%H:%M:%SZ"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError("an alignment name must be 1-128 letters, digits, '.', '_' or '-'")
    return name


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Alignment:
    """One party's rows of an intersection (see the module docstring)."""

    name: str
    job_id: str
    #: The dataset and id column the rows are of.
    dataset: str
    column: str
    #: The job's parties, in job order, and its requester.
    parties: tuple[str, ...]
    requester: str
    created: str
    expires: str
    #: This party's row indices of the intersection, in the agreed order.
    rows: np.ndarray
    #: Whether the psi job told its requester the intersection's size.
    size_released: bool
    #: A hash of the id column's values at `rows` (see :func:`ids_digest`).
    digest: str

    @property
    def size(self) -> int:
        return int(self.rows.size)

    def expired(self, now: datetime) -> bool:
        return now >= datetime.strptime(self.expires, _TIME).replace(tzinfo=UTC)

    def meta(self) -> dict[str, object]:
        return {"name": self.name, "job_id": self.job_id, "dataset": self.dataset,
                "column": self.column, "parties": list(self.parties),
                "requester": self.requester, "created": self.created, "expires": self.expires,
                "size_released": self.size_released, "digest": self.digest}


def ids_digest(ids: np.ndarray) -> str:
    """A hash of id values in order (integers as int64, strings as fixed-width UTF-32)."""
    values = np.ascontiguousarray(ids.astype("<i8") if ids.dtype.kind == "i" else ids)
    return hashlib.sha256(f"{values.dtype.str}:".encode() + values.tobytes()).hexdigest()


def make_alignment(name: str, job_id: str, dataset: str, column: str, parties: tuple[str, ...],
                   requester: str, rows: np.ndarray, days: int, *, size_released: bool,
                   ids: np.ndarray, now: datetime | None = None) -> Alignment:
    """A new alignment of `rows` of `ids` (the whole id column)."""
    now = now or utc_now()
    rows = np.asarray(rows, dtype=np.int64)
    return Alignment(check_name(name), job_id, dataset, column, tuple(parties), requester,
                     now.strftime(_TIME), (now + timedelta(days=days)).strftime(_TIME),
                     rows, size_released, ids_digest(ids[rows]))


def write_new(path: Path, meta: dict[str, object], what: str, **arrays: np.ndarray) -> None:
    """Write `arrays` and `meta` (JSON) as a new .npz file at `path`, whole (a scratch file,
    synced, then linked to its name) and never over an existing one: ConfigError naming
    `what` if the name is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    with scratch.open("wb") as handle:
        contents: dict[str, Any] = {"meta": np.array(json.dumps(meta)), **arrays}
        np.savez(handle, **contents)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(scratch, path)  # fails if the name is taken: never replaces a file
    except FileExistsError:
        raise ConfigError(f"{what} named '{path.stem}' exists on this node; names are used "
                          "once") from None
    finally:
        scratch.unlink()


class AlignmentStore:
    """A node's alignments, one file each in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, name: str) -> Path:
        return self.folder / f"{check_name(name)}.npz"

    def save(self, alignment: Alignment) -> None:
        """Keep a new alignment; a name is used once (ConfigError if it exists)."""
        write_new(self._path(alignment.name), alignment.meta(), "an alignment",
                  rows=alignment.rows)

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def get(self, name: str, now: datetime | None = None, *,
            requester: str | None = None) -> Alignment:
        """The alignment called `name` (of `requester`, if given: another's is not found);
        ConfigError if there is none or it expired (then it is deleted)."""
        path = self._path(name)
        missing = ConfigError(f"no alignment named '{name}' on this node")
        if not path.exists():
            raise missing
        alignment = self._read(path)
        if requester is not None and alignment.requester != requester:
            raise missing
        if alignment.expired(now or utc_now()):
            path.unlink(missing_ok=True)
            raise ConfigError(f"alignment '{name}' expired on {alignment.expires} and was "
                              "deleted")
        return alignment

    def list(self, now: datetime | None = None) -> list[Alignment]:
        """Every alignment still in force (expired ones are deleted)."""
        now = now or utc_now()
        kept = []
        for path in sorted(self.folder.glob("*.npz")) if self.folder.exists() else []:
            alignment = self._read(path)
            if alignment.expired(now):
                path.unlink(missing_ok=True)
            else:
                kept.append(alignment)
        return kept

    @staticmethod
    def _read(path: Path) -> Alignment:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                rows = np.asarray(data["rows"], dtype=np.int64)
            return Alignment(meta["name"], meta["job_id"], meta["dataset"], meta["column"],
                             tuple(meta["parties"]), meta["requester"], meta["created"],
                             meta["expires"], rows, bool(meta["size_released"]),
                             str(meta["digest"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"alignment file {path} cannot be read") from None
