"""Keeping a long-running service's resident memory flat (glibc only; elsewhere these do nothing).

Each session runs its stages on threads of its own, and glibc's allocator gives new threads new arenas (up to eight
per core) that keep the memory their short-lived owners freed: over hundreds of sessions the resident set grows
though nothing leaks (measured with edge-serve's soak: Python objects constant, RSS +80 % in 3 minutes).  So the
service caps the arenas once at start (:func:`limit_arenas`, ``mallopt(M_ARENA_MAX, 2)``) and hands freed memory
back to the system after each session ends (:func:`trim`, ``malloc_trim(0)``).

A session's objects form reference cycles (its threads' targets are its own methods, its stages call back into its
loop), so CPython frees them only at a full garbage collection, which comes rarely: a soak of 114 sessions showed a
saw-tooth of +7 MB per session with drops of 90 MB at each full collection, and a rising floor.  So each session's
end runs :func:`release`: one full collection (its buffers freed now), then the trim.

Large buffers too: glibc serves a request above its mmap threshold with its own mapping, returned on free, but
raises that threshold (up to 32 MiB) each time such a mapping is freed, so that later buffers of the same size come
from the heap.  The speech recognizer's buffers vary with every utterance (the encoder window grows in 2 s steps),
and heap chunks of many sizes fragment instead of going back.  :func:`fix_mmap_threshold` sets the threshold once
(``M_MMAP_THRESHOLD``, which also turns the raising off), so every buffer above it is unmapped when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from functools import lru_cache
from typing import Any

log = logging.getLogger("edge")

M_ARENA_MAX = -8  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
#: Buffers from this size up get mappings of their own (glibc's initial threshold, kept fixed).
MMAP_THRESHOLD = 128 * 1024


@lru_cache(maxsize=1)
def _glibc() -> Any | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - present on glibc only (musl, macOS: no)
    except (OSError, AttributeError):
        return None
    return libc


def _mallopt(param: int, value: int, what: str) -> bool:
    libc = _glibc()
    if libc is None:
        return False
    done = bool(libc.mallopt(param, int(value)))
    log.debug("malloc %s %d: %s", what, value, done)
    return done


def limit_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas at ``count`` for the threads started from now on; True when it took effect."""
    return _mallopt(M_ARENA_MAX, count, "arenas capped at")


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Serve every allocation of ``size`` bytes or more by a mapping of its own, from now on; True when it took
    effect."""
    return _mallopt(M_MMAP_THRESHOLD, size, "mmap threshold fixed at (bytes)")


def trim() -> bool:
    """Give the memory freed so far back to the system; True when some was returned."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def release() -> tuple[int, float]:
    """After a session ends: collect its cyclic garbage (a full collection), then :func:`trim`; (objects collected,
    milliseconds taken)."""
    started = time.perf_counter()
    collected = gc.collect()
    trim()
    ms = 1e3 * (time.perf_counter() - started)
    log.debug("memory released: %d objects collected, %.1f ms", collected, ms)
    return collected, ms
