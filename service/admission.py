"""Admission: a bounded number of requests in the service at once; past it, refuse at once.

Refusing early (before reading or decoding anything) keeps memory bounded under any load and
keeps the latency of admitted requests bounded, instead of queueing without end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import Overloaded
from service.metrics import ADMISSION_REJECTED


class AdmissionGate:
    """At most ``limit`` requests admitted at once. Used from the event loop thread only."""

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
