"""Admission: a bounded number of requests, of video streams, and of memory held by requests, in
the service at once; past any, refuse at once.

Refusing early (before reading or decoding anything) keeps memory bounded under any load and
keeps the latency of admitted requests bounded, instead of queueing without end. Both gates are
used from the event loop's thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import Counter, Gauge

from service.errors import Overloaded, RequestTooLarge
from service.metrics import (
    ADMISSION_REJECTED,
    INFLIGHT_BUDGET_BYTES,
    INFLIGHT_BYTES,
    STREAMS_OPEN,
    STREAMS_REJECTED,
)

MB = 1 << 20
# What a decoded megapixel costs while its request is in the service: the RGB pixels (3 MB) and
# the copies the pipeline works on (resized views, tiles and crops as float32). Measured with
# scripts/burst.py: 64 concurrent 1080p requests (133 MP) took the gateway from 170 MB to a
# peak of 1,360 to 1,740 MB, 9 to 12 MB a megapixel.
BYTES_PER_DECODED_MEGAPIXEL = 12 * MB
# Without a container limit the budget is this; with one, what is left of the limit once the
# idle gateway and what a burst leaves behind (measured at most 260 MB) are set aside, less a
# fifth for what the estimate above misses.
DEFAULT_INFLIGHT_MB = 1024
RESIDENT_RESERVE_MB = 400
CGROUP_MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
                        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))  # v1


def container_memory_limit_mb() -> int | None:
    """The container's memory limit from its cgroup; None where there is none."""
    for path in CGROUP_MEMORY_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        # v2 writes "max" for no limit; v1 a number near 2**63.
        if text.isdigit() and int(text) < 1 << 60:
            return int(text) // MB
        return None
    return None


def inflight_budget_mb(configured_mb: int | None, limit_mb: int | None) -> int:
    if configured_mb is not None:
        return configured_mb
    if limit_mb is None:
        return DEFAULT_INFLIGHT_MB
    return max(64, (limit_mb - RESIDENT_RESERVE_MB) * 4 // 5)


class CountingGate:
    """At most ``limit`` held at once, all transports together: one more is refused at once
    with Overloaded, saying ``refusal``, and counted in ``rejected``; ``held_gauge``, if
    given, shows those held by transport; ``on_idle`` runs when the last one leaves."""

    def __init__(self, limit: int, refusal: str, rejected: Counter,
                 held_gauge: Gauge | None = None, on_idle: Callable[[], None] = lambda: None
                 ) -> None:
        self.limit = limit
        self.held = 0
        self.refusal = refusal
        self.rejected, self.held_gauge, self.on_idle = rejected, held_gauge, on_idle

    @contextmanager
    def hold(self, transport: str) -> Iterator[None]:
        if self.held >= self.limit:
            self.rejected.labels(transport).inc()
            raise Overloaded(self.refusal)
        self.held += 1
        if self.held_gauge is not None:
            self.held_gauge.labels(transport).inc()
        try:
            yield
        finally:
            self.held -= 1
            if self.held_gauge is not None:
                self.held_gauge.labels(transport).dec()
            if not self.held:
                self.on_idle()


def admission_gate(limit: int, on_idle: Callable[[], None]) -> CountingGate:
    """At most ``limit`` requests in progress at once."""
    return CountingGate(limit, f"the service is at capacity ({limit} requests in progress); "
                               "retry later", ADMISSION_REJECTED, on_idle=on_idle)


def stream_slots(limit: int) -> CountingGate:
    """At most ``limit`` video streams open at once."""
    return CountingGate(limit, f"{limit} video streams are open, the most this service takes; "
                               "retry later", STREAMS_REJECTED, STREAMS_OPEN)


class MemoryBudget:
    """At most ``limit_bytes`` held by requests and streams at once, all transports together. A
    request holds its body's bytes as they arrive, then what its decoded images will cost, and
    lets all go when it ends; a stream holds each frame's from when it is read until it is
    answered."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held = 0
        INFLIGHT_BUDGET_BYTES.set(limit_bytes)

    @contextmanager
    def hold(self, transport: str) -> Iterator[Held]:
        held = Held(self, transport)
        try:
            yield held
        finally:
            held.release(held.bytes)


class Held:
    """One request's share of a ``MemoryBudget``."""

    def __init__(self, budget: MemoryBudget, transport: str) -> None:
        self.budget = budget
        self.transport = transport
        self.bytes = 0

    def add(self, count: int) -> None:
        """Hold ``count`` bytes more; RequestTooLarge if this request alone outgrows the budget,
        Overloaded if the others leave no room."""
        budget = self.budget
        if self.bytes + count > budget.limit_bytes:
            raise RequestTooLarge(
                f"this request needs more than the service's {budget.limit_bytes // MB} MB for "
                "requests in flight: send fewer or smaller images per request")
        if budget.held + count > budget.limit_bytes:
            ADMISSION_REJECTED.labels(self.transport).inc()
            raise Overloaded(f"the service is at its memory budget "
                             f"({budget.limit_bytes // MB} MB held by requests); retry later")
        self.bytes += count
        budget.held += count
        INFLIGHT_BYTES.set(budget.held)

    def release(self, count: int) -> None:
        """Let ``count`` of the bytes held go (a stream's frame answered)."""
        count = min(count, self.bytes)
        self.bytes -= count
        self.budget.held -= count
        INFLIGHT_BYTES.set(self.budget.held)
