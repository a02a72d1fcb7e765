"""Small files a node keeps beside its ledger key, each replaced whole."""

from __future__ import annotations

import os
from pathlib import Path

#: Syncs a file's content and size, not its other metadata (fsync where there is no such call).
_sync_data = getattr(os, "fdatasync", os.fsync)


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` to a scratch file, sync its content, and rename it over `path`: a crash
    leaves the old file or the new one, never a torn one. The folder is not synced (the
    caller does that where losing the rename matters)."""
    scratch = path.with_name(path.name + ".tmp")
    with scratch.open("wb") as handle:
        handle.write(data)
        handle.flush()
        _sync_data(handle.fileno())
    os.replace(scratch, path)


def sync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
