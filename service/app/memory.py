"""Giving memory back after a burst.

glibc keeps the pages it freed inside its arenas, one arena per thread that ever allocated, so a
burst of large images left the gateway's resident memory near its peak for good. Measured with
`python scripts/burst.py` (256 requests of a 1080p JPEG, 64 at a time; MB idle / 5 s after):
as it was 199 / 882; with ``malloc_trim`` when the service goes idle 175 / 389; with ONNX
Runtime's CPU arena off as well (runtime/embedded.py) 164 / 310; and two malloc arenas 162 / 257.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

M_ARENA_MAX = -8  # glibc's mallopt parameter, what MALLOC_ARENA_MAX sets
MALLOC_ARENAS = 2


def _glibc_function(name: str) -> Any | None:
    """A libc function by name; None off glibc (musl, macOS), where there is nothing to do."""
    path = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(path), name) if path else None
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas() -> None:
    """At most ``MALLOC_ARENAS`` glibc arenas. Call before the worker threads start."""
    mallopt = _glibc_function("mallopt")
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def trim_heap() -> None:
    """Hand the heap's free pages back to the kernel."""
    malloc_trim = _glibc_function("malloc_trim")
    if malloc_trim is not None:
        malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        malloc_trim(0)


# The heap is trimmed once the service has been idle this long. Trimming at every idle moment
# cost 5 ms a request at concurrency 1 (18.6 against 13.1 ms p50 for a 64x64 JPEG, the gateway
# in one run): malloc_trim holds the heap's lock while the next request allocates.
TRIM_AFTER_IDLE_S = 0.5


class TrimWhenIdle:
    """Trims the heap, off the event loop, once the service has stayed idle for
    TRIM_AFTER_IDLE_S; not while a trim is still running."""

    def __init__(self, in_service: Callable[[], int]) -> None:
        """in_service: how many requests are admitted now."""
        self.in_service = in_service
        self.pending: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def idle(self) -> None:
        """Called from the event loop when nothing is left in flight."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(TRIM_AFTER_IDLE_S, self._trim)

    def _trim(self) -> None:
        self._timer = None
        if self.in_service() or (self.pending is not None and not self.pending.done()):
            return  # busy again: the next idle moment schedules another
        self.pending = asyncio.get_running_loop().run_in_executor(None, trim_heap)
