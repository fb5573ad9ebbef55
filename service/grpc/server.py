"""gRPC transport (grpc.aio): a thin layer over the same decode, batching and pipeline as REST."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.admission import AdmissionGate
from service.auth import check_key, load_keys, presented_key
from service.batching import RequestBatcher
from service.config import Settings
from service.errors import (
    BackendUnavailable,
    BodyTooLarge,
    DeadlineExceeded,
    FaceposeError,
    ImageTooLarge,
    Overloaded,
    TooManyBoxes,
    TooManyImages,
    Unauthorized,
)
from service.estimate import decode_images, fill_entries
from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from service.grpc.convert import boxes_from_proto, image_result_to_proto, options_from_proto
from service.grpc.track import track_frames
from service.logs import LOGGER, log_request, request_id_from
from service.metrics import REQUEST_SECONDS, REQUESTS, REQUESTS_IN_FLIGHT
from service.pipeline.solve import load_canonical_face
from service.runtime.base import InferenceRuntime
from service.streaming import StreamIdle

T = TypeVar("T")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FacePose"].full_name
# Images of one stream estimated at once; more wait for a free slot.
STREAM_IN_FLIGHT = 8
RESOURCE_ERRORS = (ImageTooLarge, TooManyImages, TooManyBoxes, BodyTooLarge, Overloaded)
# Errors that end a whole stream (the client should retry later), not just one item.
STREAM_ENDING = (BackendUnavailable, Overloaded, DeadlineExceeded)


def status_for(error: FaceposeError) -> grpc.StatusCode:
    """The gRPC status of each error type; the HTTP ones live on the types themselves."""
    if isinstance(error, BackendUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, DeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(error, Unauthorized):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(error, RESOURCE_ERRORS):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INVALID_ARGUMENT


async def within_deadline(work: Awaitable[T], context: grpc.aio.ServicerContext,
                          server_deadline_s: float) -> T:
    """Await work, but no longer than the client's deadline or the server's own."""
    remaining = context.time_remaining()
    timeout = server_deadline_s if remaining is None else min(remaining, server_deadline_s)
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        raise DeadlineExceeded("the deadline passed before the work was done") from None


@dataclass
class ObservedCall:
    code: grpc.StatusCode = grpc.StatusCode.OK


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
        REQUESTS.labels(route, "grpc", call.code.name).inc()
        log_request(request_id, "grpc", "POST", route, call.code.name, seconds)


async def abort_internal(context: grpc.aio.ServicerContext, call: ObservedCall,
                         error: Exception) -> None:
    """Log the error with its traceback; tell the client nothing internal."""
    LOGGER.error("unexpected error in a gRPC call", exc_info=error)
    call.code = grpc.StatusCode.INTERNAL
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class FacePoseServicer(pb_grpc.FacePoseServicer):
    def __init__(self, settings: Settings, runtime: InferenceRuntime,
                 batcher: RequestBatcher, gate: AdmissionGate) -> None:
        self.settings = settings
        self.runtime = runtime
        self.batcher = batcher
        self.gate = gate
        # Set on shutdown: open Track streams end with UNAVAILABLE instead of holding the
        # process for the whole grace period.
        self.closing = asyncio.Event()

    async def _estimate(self, images: list[pb.Image], options: pb.Options,
                        fail_whole: bool = False) -> list[pb.ImageResult]:
        with self.gate.admit("grpc"):
            return await self._estimate_admitted(images, options, fail_whole)

    async def _estimate_admitted(self, images: list[pb.Image], options: pb.Options,
                                 fail_whole: bool) -> list[pb.ImageResult]:
        request_options = options_from_proto(self.settings, options)
        if len(images) > self.settings.max_images_per_request:
            raise TooManyImages(f"{len(images)} images; the limit is "
                                f"{self.settings.max_images_per_request}")
        if not await asyncio.to_thread(self.runtime.is_ready):
            raise BackendUnavailable("the inference server is not ready")
        request_options.boxes = [
            boxes_from_proto(image, index, self.settings.max_boxes_per_image)
            for index, image in enumerate(images)]
        entries, decoded = await asyncio.to_thread(
            decode_images, self.settings, [image.data for image in images], request_options,
            fail_whole)
        results = await self.batcher.submit(decoded)
        entries = await asyncio.to_thread(fill_entries, entries, results,
                                          request_options.include)
        return [image_result_to_proto(entry) for entry in entries]

    async def Estimate(self, request: pb.EstimateRequest,
                       context: grpc.aio.ServicerContext) -> pb.EstimateResponse:
        with observed_call(context, "Estimate") as call:
            try:
                results = await within_deadline(
                    self._estimate(list(request.images), request.options), context,
                    self.settings.request_timeout_s)
            except FaceposeError as exc:
                call.code = status_for(exc)
                await context.abort(call.code, f"{exc.code}: {exc.message}")
            except Exception as exc:
                await abort_internal(context, call, exc)
            return pb.EstimateResponse(results=results)

    async def _stream_item(self, item: pb.StreamRequest) -> pb.StreamResult:
        try:
            (result,) = await asyncio.wait_for(self._estimate([item.image], item.options),
                                               self.settings.request_timeout_s)
        except TimeoutError:
            raise DeadlineExceeded("an image of the stream was not done in time") from None
        except STREAM_ENDING:
            raise
        except FaceposeError as exc:
            result = pb.ImageResult(error=pb.Error(code=exc.code, message=exc.message))
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
        slots = asyncio.Semaphore(STREAM_IN_FLIGHT)
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
                    call.code = status_for(result)
                    await context.abort(call.code, f"{result.code}: {result.message}")
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
                async with aclosing(track_frames(self.settings, self.runtime,
                                                 request_iterator, self.closing)) as results:
                    async for result in results:
                        await context.write(result)
            except StreamIdle as exc:
                call.code = grpc.StatusCode.DEADLINE_EXCEEDED
                await context.abort(call.code, f"{exc.code}: {exc.message}")
            except FaceposeError as exc:
                call.code = status_for(exc)
                await context.abort(call.code, f"{exc.code}: {exc.message}")
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


class GrpcServer:
    """The gRPC server of the gateway process, sharing its runtime, batcher and admission."""

    def __init__(self, settings: Settings, runtime: InferenceRuntime,
                 batcher: RequestBatcher, gate: AdmissionGate) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", 4 * settings.max_body_bytes),
        ]
        open_prefixes: tuple[str, ...] = () if settings.protect_health_and_metrics else (
            "/grpc.health.v1.Health/", "/grpc.reflection.")
        keys = load_keys(settings.api_keys, settings.api_keys_file)
        self.server = grpc.aio.server(options=options,
                                      interceptors=[ApiKeyInterceptor(keys, open_prefixes)])
        self.servicer = FacePoseServicer(settings, runtime, batcher, gate)
        pb_grpc.add_FacePoseServicer_to_server(self.servicer, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")

    async def start(self) -> None:
        await self.server.start()

    async def set_serving(self, ready: bool) -> None:
        """What the standard health service answers, for the server and for FacePose."""
        status = (health_pb2.HealthCheckResponse.SERVING if ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        self.servicer.closing.set()
        await self.server.stop(grace_s)
