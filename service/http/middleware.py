"""The gateway's HTTP middleware: request ids, metrics and logs; API keys.

Plain ASGI, not Starlette's BaseHTTPMiddleware, which runs the rest of every request in a task
of its own behind memory streams: two of those cost more per request than the whole JSON
response of a pose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.app.auth import check_key, presented_key
from service.errors import ShuttingDown, Unauthorized
from service.logs import log_request, request_id_from
from service.metrics import (
    HTTP_RESPONSES,
    REQUEST_SECONDS,
    REQUESTS,
    REQUESTS_IN_FLIGHT,
    outcome_of_status,
)


def route_template(scope: Scope) -> str:
    """The matched route's path template ("unmatched" for none), so that paths carrying ids
    cannot blow up a metric's label set. FastAPI's routes put themselves in the scope;
    Starlette's plain ones (/openapi.json) only their endpoint, found here among the router's
    routes."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    endpoint, router = scope.get("endpoint"), scope.get("router")
    if endpoint is not None and router is not None:
        for candidate in router.routes:
            if getattr(candidate, "endpoint", None) is endpoint:
                return str(candidate.path)
    return "unmatched"


class ObserveRequests:
    """Each HTTP request: an X-Request-ID (the client's, else a new one) on the response and
    in its log line; counted and timed by route and status code."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope).get("x-request-id"))
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        started = time.perf_counter()
        try:
            with REQUESTS_IN_FLIGHT.labels("http").track_inprogress():
                await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            path = route_template(scope)
            REQUEST_SECONDS.labels(path, "http").observe(seconds)
            REQUESTS.labels(path, "http", outcome_of_status(status)).inc()
            HTTP_RESPONSES.labels(path, str(status)).inc()
            log_request(request_id, "http", scope["method"], path, str(status), seconds)


# What a request refused once the drain is over may send before its answer; past it, the rest
# is left unread.
DRAIN_READ_LIMIT_BYTES = 1 << 20


class DrainConnections:
    """While the gateway drains (``draining()``), every response says Connection: close, so
    that a client takes its next request to a new connection, which the load balancer sends
    elsewhere, instead of one the server is about to close; once the drain is over
    (``stopping()``), a request that still arrives is answered 503 shutting_down, not dropped."""

    def __init__(self, app: ASGIApp, draining: Callable[[], bool], stopping: Callable[[], bool],
                 refusal: Callable[[ShuttingDown], Response]) -> None:
        self.app = app
        self.draining = draining
        self.stopping = stopping
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.draining():
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        if self.stopping():
            # The body read first (up to a bound): a socket closed with unread data may reset
            # before the client has read the answer.
            read = 0
            while read <= DRAIN_READ_LIMIT_BYTES:
                message = await receive()
                read += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            refused = self.refusal(ShuttingDown("the service is shutting down: send again, to "
                                                "another replica"))
            await refused(scope, receive, send_closing)
            return
        await self.app(scope, receive, send_closing)


class RequireApiKey:
    """Refuse HTTP requests without a valid API key, except to ``open_paths`` and CORS
    preflights. No keys configured: everything is open."""

    def __init__(self, app: ASGIApp, keys: tuple[bytes, ...], open_paths: Collection[str],
                 refusal: Callable[[Unauthorized], Response]) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = frozenset(open_paths)
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self.keys and scope["path"] not in self.open_paths
                and scope["method"] != "OPTIONS"):
            headers = Headers(scope=scope)
            try:
                check_key(self.keys, presented_key(headers.get("authorization"),
                                                   headers.get("x-api-key")))
            except Unauthorized as exc:
                await self.refusal(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)
