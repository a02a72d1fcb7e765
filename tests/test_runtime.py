"""Process tuning for long-running commands."""

from __future__ import annotations

import platform

import pytest

from invisible.runtime import keep_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_glibc_keeps_freed_memory_when_asked():
    assert keep_freed_memory() is True
