"""gRPC transport (grpc.aio): the FacePose service over the application core, the same
request flow, admission and refusals as REST."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.app.admission import Held
from service.app.auth import check_key, presented_key
from service.app.core import Core
from service.app.flow import estimate_request
from service.app.images import EncodedImages
from service.app.refusals import refusal_for
from service.app.streams import stream_config_model
from service.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    FaceposeError,
    Overloaded,
    Unauthorized,
)
from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from service.grpc.messages import (
    boxes_from_proto,
    error_message,
    image_message,
    options_from_proto,
)
from service.grpc.track_stream import track_frames
from service.logs import LOGGER, log_request, request_id_from
from service.metrics import (
    GRPC_CALLS,
    REQUEST_SECONDS,
    REQUESTS,
    REQUESTS_IN_FLIGHT,
    STAGE_SECONDS,
    Outcome,
    outcome_of_status,
)
from service.pipeline.solve import load_canonical_face
from service.wire import BLENDSHAPE_NAMES

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FacePose"].full_name
# Errors that end a whole stream (the client should retry later), not just one item.
STREAM_ENDING = (BackendUnavailable, Overloaded, DeadlineExceeded)


@dataclass
class ObservedCall:
    code: grpc.StatusCode = grpc.StatusCode.OK
    refused_status: int | None = None  # the HTTP status of the refusal that ended it, if one

    @property
    def outcome(self) -> Outcome:
        """As a refusal's status says (RESOURCE_EXHAUSTED is both "overloaded" and "too
        large"), else as the code does."""
        if self.refused_status is not None:
            return outcome_of_status(self.refused_status)
        return GRPC_OUTCOMES.get(self.code, Outcome.CLIENT_ERROR)


# gRPC codes not from a refusal (the framework's own, or a fault), as outcomes.
GRPC_OUTCOMES = {grpc.StatusCode.OK: Outcome.OK, grpc.StatusCode.CANCELLED: Outcome.CANCELLED,
                 grpc.StatusCode.DEADLINE_EXCEEDED: Outcome.TIMEOUT,
                 grpc.StatusCode.UNAVAILABLE: Outcome.UNAVAILABLE,
                 grpc.StatusCode.UNKNOWN: Outcome.SERVER_ERROR,
                 grpc.StatusCode.INTERNAL: Outcome.SERVER_ERROR}


@contextmanager
def observed_call(context: grpc.aio.ServicerContext, method: str) -> Iterator[ObservedCall]:
    """Metrics and a log line for one RPC, with the client's x-request-id if it sent one."""
    metadata = dict(context.invocation_metadata() or ())
    request_id = request_id_from(metadata.get("x-request-id"))
    route = f"/facepose.v1.FacePose/{method}"
    call = ObservedCall()
    started = time.perf_counter()
    try:
        with REQUESTS_IN_FLIGHT.labels("grpc").track_inprogress():
            yield call
    except asyncio.CancelledError:
        call.code = grpc.StatusCode.CANCELLED
        raise
    except Exception:
        if call.code == grpc.StatusCode.OK:
            call.code = grpc.StatusCode.UNKNOWN
        raise
    finally:
        seconds = time.perf_counter() - started
        REQUEST_SECONDS.labels(route, "grpc").observe(seconds)
        REQUESTS.labels(route, "grpc", call.outcome).inc()
        GRPC_CALLS.labels(route, call.code.name).inc()
        log_request(request_id, "grpc", "POST", route, call.code.name, seconds)


async def abort_internal(context: grpc.aio.ServicerContext, call: ObservedCall,
                         error: Exception) -> None:
    """Log the error with its traceback; tell the client nothing internal."""
    LOGGER.error("unexpected error in a gRPC call", exc_info=error)
    call.code = grpc.StatusCode.INTERNAL
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class FacePoseServicer(pb_grpc.FacePoseServicer):
    def __init__(self, core: Core) -> None:
        self.core = core
        self.stream_config_model = stream_config_model(core.settings)

    async def refuse(self, context: grpc.aio.ServicerContext, call: ObservedCall,
                     error: FaceposeError) -> None:
        refusal = refusal_for(error, self.core.settings.retry_after_s)
        call.code, call.refused_status = grpc.StatusCode[refusal.grpc_code], refusal.status
        await context.abort(call.code, refusal.reason)

    async def _estimate(self, images: list[pb.Image], options: pb.Options,
                        deadline_s: float | None) -> list[pb.ImageResult]:
        settings = self.core.settings
        request_options = options_from_proto(self.core.options_model, options)

        async def read(held: Held) -> EncodedImages:
            # The message is in memory already: the flow holds its bytes.
            return EncodedImages(
                [image.data for image in images],
                [boxes_from_proto(image, index, settings.max_boxes_per_image)
                 for index, image in enumerate(images)])

        outcomes = await estimate_request(self.core, "grpc", request_options, read, deadline_s)
        include = request_options.included

        def messages() -> list[pb.ImageResult]:
            with STAGE_SECONDS.labels("serialize").time():
                return [image_message(outcome, include) for outcome in outcomes]

        return await asyncio.to_thread(messages)

    async def Estimate(self, request: pb.EstimateRequest,
                       context: grpc.aio.ServicerContext) -> pb.EstimateResponse:
        with observed_call(context, "Estimate") as call:
            try:
                results = await self._estimate(list(request.images), request.options,
                                               context.time_remaining())
            except FaceposeError as exc:
                await self.refuse(context, call, exc)
            except Exception as exc:
                await abort_internal(context, call, exc)
            return pb.EstimateResponse(results=results)

    async def _stream_item(self, item: pb.StreamRequest) -> pb.StreamResult:
        try:
            (result,) = await self._estimate([item.image], item.options, None)
        except STREAM_ENDING:
            raise
        except FaceposeError as exc:
            result = pb.ImageResult(error=error_message(exc))
        return pb.StreamResult(id=item.id, result=result)

    async def EstimateStream(self, request_iterator: AsyncIterator[pb.StreamRequest],
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamResult]:
        with observed_call(context, "EstimateStream") as call:
            async for result in self._stream(request_iterator, context, call):
                yield result

    async def _stream(self, request_iterator: AsyncIterator[pb.StreamRequest],
                      context: grpc.aio.ServicerContext, call: ObservedCall
                      ) -> AsyncIterator[pb.StreamResult]:
        finished: asyncio.Queue[pb.StreamResult | BaseException | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.core.settings.estimate_stream_max_in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def handle(item: pb.StreamRequest) -> None:
            try:
                await finished.put(await self._stream_item(item))
            except BaseException as exc:
                await finished.put(exc)
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for item in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(handle(item))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.gather(*list(tasks))
            except BaseException as exc:
                await finished.put(exc)
            await finished.put(None)

        reader = asyncio.create_task(read())
        try:
            while (result := await finished.get()) is not None:
                if isinstance(result, FaceposeError):
                    await self.refuse(context, call, result)
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, Exception):
                    await abort_internal(context, call, result)
                yield result
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def Track(self, request_iterator: AsyncIterator[pb.TrackRequest],
                    context: grpc.aio.ServicerContext) -> None:
        # A coroutine writing its results, not an async generator yielding them: when the
        # client cancels, gRPC cancels this task, and the stream is closed (and its slot freed)
        # here and now. A generator would be left suspended at its yield until collected.
        with observed_call(context, "Track") as call:
            try:
                async with aclosing(track_frames(self.core, request_iterator,
                                                 self.stream_config_model)) as results:
                    async for result in results:
                        await context.write(result)
            except FaceposeError as exc:
                await self.refuse(context, call, exc)
            except Exception as exc:
                await abort_internal(context, call, exc)

    async def GetMeshTopology(self, request: pb.GetMeshTopologyRequest,
                              context: grpc.aio.ServicerContext) -> pb.MeshTopology:
        face = load_canonical_face()
        return pb.MeshTopology(
            num_vertices=len(face.vertices_mm),
            triangles=face.triangles.ravel().tolist(),
            landmarks68=face.landmarks68.tolist(),
            canonical_vertices_mm=face.vertices_mm.ravel().tolist(),
            blendshape_names=list(BLENDSHAPE_NAMES),
        )


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Checks the API key in the metadata (`authorization: Bearer KEY` or `x-api-key`)."""

    def __init__(self, keys: tuple[bytes, ...], open_prefixes: tuple[str, ...]) -> None:
        self.keys = keys
        self.open_prefixes = open_prefixes

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if not self.keys or handler is None or details.method.startswith(self.open_prefixes):
            return handler
        metadata = dict(details.invocation_metadata or ())
        try:
            check_key(self.keys, presented_key(metadata.get("authorization"),
                                               metadata.get("x-api-key")))
        except Unauthorized as exc:
            return _denying(handler, exc.message)
        return handler


def _denying(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED."""
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - abort raises; this makes a response stream

    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **codecs)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **codecs)


# What bounds idle, dead and crowded connections. No cap on calls server-wide
# (``maximum_concurrent_rpcs``): a call counts against it from its headers, and one whose
# message never arrives holds its place for good (measured: with a cap of 1, one stalled call
# refused every other with RESOURCE_EXHAUSTED), while the core's admission and memory budget
# count a call only once its message is read. A stalled call holds its HTTP/2 stream and the
# bytes it sent (at most max_receive_message_length) until the client's deadline or until it
# goes.
CONNECTION_LIMITS: tuple[tuple[str, int], ...] = (
    ("grpc.max_concurrent_streams", 100),  # calls open on one connection
    ("grpc.max_connection_idle_ms", 300_000),  # a connection with no call for 5 min: closed
    # A ping every minute on a connection; a peer that answers none in 20 s is gone (half-open
    # TCP, a node lost) and its connection is closed.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # gRPC binds with SO_REUSEPORT by default: a second gateway on the same port would start
    # and silently take half of the calls. Off, a taken port stops the second one at start.
    ("grpc.so_reuseport", 0),
)


class GrpcServer:
    """The gRPC server of the gateway process, over the same core as the HTTP one; the core
    starts and stops it (``Core.attach``)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.server: grpc.aio.Server | None = None
        self.health: health.aio.HealthServicer | None = None

    async def start(self) -> None:
        """Bind and serve; made here, in the running event loop, not when the app is built."""
        core, settings = self.core, self.core.settings
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", 4 * settings.max_body_bytes),
            *CONNECTION_LIMITS,
        ]
        open_prefixes: tuple[str, ...] = () if settings.protect_health_and_metrics else (
            "/grpc.health.v1.Health/", "/grpc.reflection.")
        self.server = grpc.aio.server(
            options=options, interceptors=[ApiKeyInterceptor(core.api_keys, open_prefixes)])
        self.servicer = FacePoseServicer(core)
        pb_grpc.add_FacePoseServicer_to_server(self.servicer, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            self.server.add_insecure_port(address)
        except RuntimeError:
            raise OSError(f"gRPC cannot listen on {address}: the port is taken (or the address "
                          "is not this host's). Set FACEPOSE_GRPC_PORT to a free port, or 0 for "
                          "no gRPC.") from None
        await self.server.start()
        LOGGER.info("gRPC listening", extra={"address": address})

    async def set_serving(self, ready: bool) -> None:
        """What the standard health service answers, for the server and for FacePose."""
        status = (health_pb2.HealthCheckResponse.SERVING if ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.health is not None:
            for name in ("", SERVICE_NAME):
                await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace_s)
