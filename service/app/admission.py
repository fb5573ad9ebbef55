"""Admission: a bounded number of requests, and of video streams, in the service at once; past
either, refuse at once.

Refusing early (before reading or decoding anything) keeps memory bounded under any load and
keeps the latency of admitted requests bounded, instead of queueing without end. Both gates are
used from the event loop's thread only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import Overloaded
from service.metrics import ADMISSION_REJECTED, STREAMS_OPEN, STREAMS_REJECTED


class AdmissionGate:
    """At most ``limit`` requests admitted at once, all transports together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.admitted = 0

    @contextmanager
    def admit(self, transport: str) -> Iterator[None]:
        if self.admitted >= self.limit:
            ADMISSION_REJECTED.labels(transport).inc()
            raise Overloaded(f"the service is at capacity ({self.limit} requests in progress); "
                             "retry later")
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1


class StreamSlots:
    """At most ``limit`` video streams open at once, all transports together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    @contextmanager
    def hold(self, transport: str) -> Iterator[None]:
        if self.open >= self.limit:
            STREAMS_REJECTED.labels(transport).inc()
            raise Overloaded(f"{self.limit} video streams are open, the most this service "
                             "takes; retry later")
        self.open += 1
        STREAMS_OPEN.labels(transport).inc()
        try:
            yield
        finally:
            self.open -= 1
            STREAMS_OPEN.labels(transport).dec()
