"""The HTTP server's limits on connections, so that connections which are idle, half-open or
slow to send a request's head cannot wear the server down (the body has its own deadline, in
``body.py``; the requests and memory held, the core's admission).

uvicorn closes a kept-alive connection idle for ``keep_alive_timeout_s``, but it has no deadline
for a request's head: a client that connects and sends nothing, or part of a head, holds its
connection for as long as it likes, and with a cap on connections (``max_connections``), a few
hundred such clients would lock everyone out. ``HeadDeadlineProtocol`` adds the deadline. It
is the h11 protocol, not httptools: h11 bounds a head's size (``MAX_HEAD_BYTES``), which the
httptools one does not, and the parsing it costs is small beside the work of a request.

A head h11 refuses (too large, or not HTTP) is answered in the one JSON error shape (414 for a
request line over the limit, 431 for headers, else 400) and the connection closed the way web
servers close after an early answer: the sending side first, then what the client still sends
read and dropped for ``LINGER_S``. Closed at once with unread data, the socket is reset, and
the reset can reach the client before it has read the answer.
"""

from __future__ import annotations

import asyncio
from functools import partial
from http import HTTPStatus
from typing import Any

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.app.refusals import refusal_for
from service.config import Settings
from service.errors import BadRequestBody, FaceposeError, HeadersTooLarge, UriTooLong

# A request line and headers larger than this are refused with 400: room for long bearer
# tokens and cookies, not for a head used to fill the server's memory.
MAX_HEAD_BYTES = 64 * 1024
# How long the rest of a refused request is read and dropped before its connection closes.
LINGER_S = 2.0


def head_over_limit(buffered: bytes) -> bool:
    """Whether the head that begins ``buffered`` does not end within MAX_HEAD_BYTES."""
    return (len(buffered) > MAX_HEAD_BYTES
            and buffered.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4) < 0)


def head_refusal(buffered: bytes) -> FaceposeError:
    """Why a head over the limit (``head_over_limit``) is refused: its request line, or its
    headers."""
    limit = f"{MAX_HEAD_BYTES // 1024} KiB"
    if b"\n" not in buffered[:MAX_HEAD_BYTES]:
        return UriTooLong(f"the request line is over the {limit} this server reads: send "
                          "long values such as boxes in a JSON body "
                          '({"images": [{"data": ..., "boxes": [...]}]})')
    return HeadersTooLarge(f"the request's headers are over the {limit} this server reads")


class HeadDeadlineProtocol(H11Protocol):
    """h11 with a deadline on each request's head: from the connection's start for the first
    request, from its first byte for each later one. Past it the connection is closed."""

    def __init__(self, *args: Any, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout_s = head_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None
        self._lingering = False
        self._idle_bytes = 0  # received since the connection last waited for a head

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the rest of a refused request
        if self.conn.their_state is h11.IDLE:
            # h11 bounds only a head that is still incomplete: one that arrives whole in a
            # read (up to 256 KiB) would pass. The limit is checked here on what has come,
            # the buffer copied only once that is more than a head may be.
            self._idle_bytes += len(data)
            if self._idle_bytes > MAX_HEAD_BYTES:
                buffered = self.conn.trailing_data[0] + data
                if head_over_limit(buffered):
                    self._refuse(head_refusal(buffered))
                    return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._idle_bytes = 0
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

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what h11 refused. A head: the JSON error, and a lingering
        close. A body's framing (a chunk header, say), with the app running on the request:
        the connection closed, as there is no answer left to give that the app's would not
        collide with."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        # A head over the limit never reaches h11 (``data_received``): this one is malformed.
        self._refuse(BadRequestBody("malformed HTTP/1.1 request head"))

    def _refuse(self, error: FaceposeError) -> None:
        """The JSON error for a head, written as bytes (h11 will send no response to a head it
        has not parsed), then the lingering close."""
        refusal = refusal_for(error, retry_after_s=0)
        self.logger.info("refused a request head: %s", refusal.reason)
        body = orjson.dumps(refusal.body)
        self.transport.write(
            f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}\r\n"
            f"content-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode() + body)
        self._stop_head_deadline()
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

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
