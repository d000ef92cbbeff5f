# -*- test-case-name: tests.test_memory -*-
"""
What the gateway asks of glibc's malloc, through ctypes.

Kaldi allocates and frees its decoding state with malloc on the ASR threads.
Freed memory stays in malloc's heaps until it is handed back:
L{MallocTrim} calls C{malloc_trim(0)} after a recogniser is freed (see
L{mgateway.asr.warm}), which returns the free pages of every arena to the
kernel, and counts what it gave back on C{/metrics}. On a C library other
than glibc these are no-ops.
"""

from __future__ import annotations

import ctypes
import os

from prometheus_client import Counter
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.interfaces import IMemoryRelease

log = Logger()

TRIMS = Counter("asapp_mg_malloc_trims", "malloc_trim(0) calls after a recogniser was freed.")
TRIMMED = Counter("asapp_mg_malloc_trimmed_bytes", "Resident memory that malloc_trim(0) gave back to the system.")

_PAGE = os.sysconf("SC_PAGE_SIZE")


def glibc() -> ctypes.CDLL | None:
    """glibc, or None on another C library (musl has no malloc_trim)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def resident_bytes() -> int:
    """This process's resident set size now (/proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


@implementer(IMemoryRelease)
class MallocTrim:
    """
    C{malloc_trim(0)} on glibc, counted (calls, and resident bytes given
    back) on C{/metrics}; nothing elsewhere.

    @param libc: the library to call; default L{glibc}().
    """

    def __init__(self, libc: ctypes.CDLL | None = None):
        self._libc = libc if libc is not None else glibc()

    def release(self) -> None:
        if self._libc is None:
            return
        try:
            before = resident_bytes()
            self._libc.malloc_trim(0)
            TRIMS.inc()
            TRIMMED.inc(max(0, before - resident_bytes()))
        except Exception:
            log.failure("malloc_trim failed")
