"""gRPC transport (grpc.aio): a thin layer over the same decode, batching and pipeline as REST."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.batching import RequestBatcher
from service.config import Settings
from service.errors import (
    BackendUnavailable,
    BodyTooLarge,
    FaceposeError,
    ImageTooLarge,
    TooManyImages,
)
from service.estimate import decode_images, fill_entries
from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from service.grpc.convert import boxes_from_proto, image_result_to_proto, options_from_proto
from service.metrics import REQUEST_SECONDS, REQUESTS
from service.pipeline.solve import load_canonical_face
from service.runtime.base import InferenceRuntime

T = TypeVar("T")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FacePose"].full_name
# Images of one stream estimated at once; more wait for a free slot.
STREAM_IN_FLIGHT = 8
RESOURCE_ERRORS = (ImageTooLarge, TooManyImages, BodyTooLarge)


def status_for(error: FaceposeError) -> grpc.StatusCode:
    """The gRPC status of each error type; the HTTP ones live on the types themselves."""
    if isinstance(error, BackendUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, RESOURCE_ERRORS):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INVALID_ARGUMENT


async def within_deadline(work: Awaitable[T], context: grpc.aio.ServicerContext) -> T:
    """Await work, but no longer than the client's deadline."""
    remaining = context.time_remaining()
    try:
        return await asyncio.wait_for(work, remaining)
    except TimeoutError:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed")
        raise  # abort raises; this is for the type checker


class FacePoseServicer(pb_grpc.FacePoseServicer):
    def __init__(self, settings: Settings, runtime: InferenceRuntime,
                 batcher: RequestBatcher) -> None:
        self.settings = settings
        self.runtime = runtime
        self.batcher = batcher

    async def _estimate(self, images: list[pb.Image], options: pb.Options,
                        fail_whole: bool = False) -> list[pb.ImageResult]:
        request_options = options_from_proto(self.settings, options)
        if len(images) > self.settings.max_images_per_request:
            raise TooManyImages(f"{len(images)} images; the limit is "
                                f"{self.settings.max_images_per_request}")
        if not await asyncio.to_thread(self.runtime.is_ready):
            raise BackendUnavailable("the inference server is not ready")
        request_options.boxes = [boxes_from_proto(image, index)
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
        with REQUEST_SECONDS.labels("grpc:Estimate").time():
            try:
                results = await within_deadline(
                    self._estimate(list(request.images), request.options), context)
            except FaceposeError as exc:
                REQUESTS.labels("grpc:Estimate", "grpc", status_for(exc).name).inc()
                await context.abort(status_for(exc), f"{exc.code}: {exc.message}")
            REQUESTS.labels("grpc:Estimate", "grpc", "OK").inc()
            return pb.EstimateResponse(results=results)

    async def _stream_item(self, item: pb.StreamRequest) -> pb.StreamResult:
        try:
            (result,) = await self._estimate([item.image], item.options)
        except BackendUnavailable:
            raise
        except FaceposeError as exc:
            result = pb.ImageResult(error=pb.Error(code=exc.code, message=exc.message))
        REQUESTS.labels("grpc:EstimateStream", "grpc", "OK" if not result.HasField("error")
                        else result.error.code).inc()
        return pb.StreamResult(id=item.id, result=result)

    async def EstimateStream(self, request_iterator: AsyncIterator[pb.StreamRequest],
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamResult]:
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
                    await context.abort(status_for(result), f"{result.code}: {result.message}")
                if isinstance(result, BaseException):
                    raise result
                yield result
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    async def GetMeshTopology(self, request: pb.GetMeshTopologyRequest,
                              context: grpc.aio.ServicerContext) -> pb.MeshTopology:
        face = load_canonical_face()
        return pb.MeshTopology(
            num_vertices=len(face.vertices_mm),
            triangles=face.triangles.ravel().tolist(),
            landmarks68=face.landmarks68.tolist(),
            canonical_vertices_mm=face.vertices_mm.ravel().tolist(),
        )


async def _report_health(runtime: InferenceRuntime, servicer: health.aio.HealthServicer) -> None:
    while True:
        ready = await asyncio.to_thread(runtime.is_ready)
        status = (health_pb2.HealthCheckResponse.SERVING if ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            await servicer.set(name, status)
        await asyncio.sleep(1.0)


class GrpcServer:
    """The gRPC server of the gateway process, sharing its runtime and batcher."""

    def __init__(self, settings: Settings, runtime: InferenceRuntime,
                 batcher: RequestBatcher) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", 4 * settings.max_body_bytes),
        ]
        self.server = grpc.aio.server(options=options)
        pb_grpc.add_FacePoseServicer_to_server(
            FacePoseServicer(settings, runtime, batcher), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
        self.runtime = runtime
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        self._health_task = asyncio.create_task(_report_health(self.runtime, self.health))

    async def stop(self, grace_s: float) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
