"""Process-level tuning for the long-running commands (a node, a benchmark run).

Protocols allocate and free numpy arrays of megabytes at every step. glibc
returns such blocks to the operating system on free and page-faults them
back 4 KiB at a time on the next use (about 2,000 faults per 8 MB array).
Raising the mmap and trim thresholds keeps them in the heap for reuse:
measured on the in-process ss_mul benchmark at 10^6 elements, 273 ms
before, 216 ms after. The heap then keeps up to the peak of what the
process used. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import threading
import time

from invisible.text import printable

log = logging.getLogger(__name__)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks in the heap; True if it applied."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    applied = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _THRESHOLD_BYTES))
    log.debug("glibc keeps freed memory: %s", applied)
    return applied


class OneLineFormatter(logging.Formatter):
    """Log records as single lines: control characters in a message (where a peer's or a
    requester's text may appear) are escaped, so no one can forge a line of a node's log.
    A traceback the logger adds stays as it is: it is the node's own."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.msg, record.args
        record.msg = printable(record.getMessage())
        record.args = None
        try:
            return super().format(record)
        finally:
            record.msg, record.args = saved


def exit_with_parent(interval_s: float = 0.5) -> None:
    """In a worker process (a pool of obfuscators or decryptors): exit as soon as the
    process that started it is gone. A node or test killed with SIGKILL left its pool's
    workers running, re-parented, each holding its memory (and a decryptor its key share):
    a mutation run that killed timed-out tests left hundreds and ran the machine out of
    memory."""
    # The pid the worker was started by, not its parent now: a worker still starting when
    # its parent was killed would take init (1) for its parent and wait for ever.
    spawner = multiprocessing.parent_process()
    parent = spawner.pid if spawner is not None and spawner.pid else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
