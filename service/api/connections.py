"""The HTTP server's limits on connections, so that connections which are idle, half-open or
slow to send a request's head cannot wear the server down (the body has its own deadline, in
``body.py``; the requests and memory held, the core's admission).

uvicorn closes a kept-alive connection idle for ``keep_alive_timeout_s``, but it has no deadline
for a request's head: a client that connects and sends nothing, or part of a head, holds its
connection for as long as it likes, and with a cap on connections (``max_connections``), a few
hundred such clients would lock everyone out. ``HeadDeadlineProtocol`` adds the deadline. It
is the h11 protocol, not httptools: h11 bounds a head's size (``MAX_HEAD_BYTES``), which the
httptools one does not, and the parsing it costs is small beside the work of a request.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.config import Settings

# A request line and headers larger than this are refused with 400: room for long bearer
# tokens and cookies, not for a head used to fill the server's memory.
MAX_HEAD_BYTES = 64 * 1024


class HeadDeadlineProtocol(H11Protocol):
    """h11 with a deadline on each request's head: from the connection's start for the first
    request, from its first byte for each later one. Past it the connection is closed."""

    def __init__(self, *args: Any, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout_s = head_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Still IDLE on the client's side: the head has not all arrived.
        if self.conn.their_state is h11.IDLE:
            self._start_head_deadline()
        else:
            self._stop_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def _start_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.head_timeout_s,
                                                       self._head_deadline_passed)

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def server_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config's arguments for the limits above."""
    return {
        "http": partial(HeadDeadlineProtocol, head_timeout_s=settings.head_read_timeout_s),
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        # Past this many connections (or requests and streams being served), uvicorn answers
        # a plain 503 itself: the last bound on file descriptors and memory, not admission.
        "limit_concurrency": settings.max_connections,
    }
