"""The composition root: one ``Core`` per process holds what every transport shares (settings,
API keys, the options model, the inference runtime, admission, the request batcher) and starts
and stops it, with the servers the transports attach.

Transports import the core; the core imports no transport. A transport that runs a server of
its own (gRPC) hands it to ``Core.attach``, and the core starts it after the runtime is up and
stops it before the runtime goes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from functools import partial
from typing import Protocol

import cv2

from service.app.admission import (
    MB,
    MemoryBudget,
    admission_gate,
    container_memory_limit_mb,
    inflight_budget_mb,
    stream_slots,
)
from service.app.auth import load_keys
from service.app.batcher import RequestBatcher
from service.app.memory import TrimWhenIdle, limit_malloc_arenas
from service.app.options import RequestOptions, options_model
from service.config import Settings
from service.errors import BackendUnavailable
from service.metrics import BACKEND_READY, describe_build
from service.pipeline.estimate import estimate_faces
from service.pipeline.solve import load_canonical_face
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from service.runtime.model_config import model_hashes

READINESS_PERIOD_S = 1.0


class Server(Protocol):
    """A transport's own server, run beside the HTTP one."""

    async def start(self) -> None: ...

    async def set_serving(self, ready: bool) -> None: ...

    async def stop(self, grace_s: float) -> None: ...


class NotStarted(RuntimeError):
    """The core was used before ``start``."""


class Core:
    def __init__(self, settings: Settings) -> None:
        limit_malloc_arenas()
        cv2.setNumThreads(settings.opencv_threads)
        self.settings = settings
        self.api_keys = load_keys(settings.api_keys, settings.api_keys_file)
        self.options_model: type[RequestOptions] = options_model(settings)
        trim = TrimWhenIdle(lambda: self.gate.held)
        self.gate = admission_gate(settings.max_in_flight_requests, trim.idle)
        self.streams = stream_slots(settings.stream_max_streams)
        self.memory = MemoryBudget(MB * inflight_budget_mb(settings.max_inflight_mb,
                                                           container_memory_limit_mb()))
        # Set on SIGTERM: readiness fails at once so that load balancers stop sending, and each
        # response says Connection: close.
        self.draining = False
        # Set once the drain window is over: a request that still arrives is refused with
        # shutting_down (the listeners are closing; requests in flight finish).
        self.stopping = False
        # Set when the drain is over: open streams end with shutting_down instead of holding
        # the process.
        self.closing = asyncio.Event()
        self._servers: list[Server] = []
        self._servers_stopped: asyncio.Future[None] | None = None
        self._runtime: InferenceRuntime | None = None
        self._batcher: RequestBatcher | None = None
        self._watch: asyncio.Task[None] | None = None

    def attach(self, server: Server) -> None:
        self._servers.append(server)

    @property
    def runtime(self) -> InferenceRuntime:
        if self._runtime is None:
            raise NotStarted("the core is not started")
        return self._runtime

    @property
    def batcher(self) -> RequestBatcher:
        if self._batcher is None:
            raise NotStarted("the core is not started")
        return self._batcher

    async def start(self, runtime: InferenceRuntime | None = None) -> None:
        """runtime: one made elsewhere (tests); by default the one the settings name."""
        settings = self.settings
        self.draining = self.stopping = False
        self.closing = asyncio.Event()
        self._runtime = runtime or create_runtime(settings)
        load_canonical_face()
        self._batcher = RequestBatcher(partial(estimate_faces, self._runtime),
                                       settings.batch_max_images,
                                       settings.batch_max_wait_ms / 1000, settings.batch_workers,
                                       in_service=lambda: self.gate.held)
        describe_build(settings.runtime, model_hashes(settings.model_repository))
        # The first readiness check may wait for the servers; every later one answers at once.
        await asyncio.to_thread(self._runtime.is_ready)
        self._batcher.start()
        for server in self._servers:
            await server.start()
        self._watch = asyncio.create_task(self._watch_readiness())

    def begin_stopping(self) -> None:
        """The drain is over: requests that still arrive are refused, and the other
        transports' servers stop now (gRPC: GOAWAY, its calls in flight finish), beside the HTTP
        server's own wait for its requests."""
        self.draining = self.stopping = True
        self.closing.set()
        if self._servers_stopped is None:
            self._servers_stopped = asyncio.ensure_future(self._stop_servers())

    async def _stop_servers(self) -> None:
        for server in self._servers:
            await server.stop(grace_s=self.settings.shutdown_grace_s)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        self.begin_stopping()
        assert self._servers_stopped is not None
        await self._servers_stopped
        if self._batcher is not None:
            await self._batcher.stop()
        if self._runtime is not None:
            self._runtime.close()
        self._runtime = self._batcher = self._watch = self._servers_stopped = None

    @contextlib.contextmanager
    def stream(self, transport: str) -> Iterator[None]:
        """A video stream's entry, whatever its transport: the inference runtime ready, and
        one of the stream slots held while it lasts. Raises BackendUnavailable or
        Overloaded."""
        if not self.backend_ready():
            raise BackendUnavailable("the inference server is not ready")
        with self.streams.hold(transport):
            yield

    def backend_ready(self) -> bool:
        """Whether the inference runtime is ready, at once: a runtime's ``is_ready`` answers
        from what it last learnt after its first call, which ``start`` makes."""
        return self.runtime.is_ready()

    async def is_ready(self) -> bool:
        """Ready: not draining for shutdown, and the inference runtime ready."""
        ready = not self.draining and self.backend_ready()
        BACKEND_READY.set(int(ready))
        return ready

    async def _watch_readiness(self) -> None:
        """Keep the readiness gauge and the servers' health current between probes."""
        while True:
            ready = await self.is_ready()
            for server in self._servers:
                await server.set_serving(ready)
            await asyncio.sleep(READINESS_PERIOD_S)
