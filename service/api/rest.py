"""REST transport: a thin FastAPI layer over ``pipeline.estimate``."""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at run
# time, and they refer to names local to create_app.


import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import JSONResponse as StarletteJSONResponse

from service import __version__
from service.admission import AdmissionGate
from service.api import schemas
from service.api.middleware import ObserveRequests, RequireApiKey
from service.api.options import parse_boxes
from service.api.query import IMAGE_CONTENT_TYPES, ImageQuery, image_query, image_request_body
from service.api.render import render_router
from service.api.serialize import error_dict
from service.api.stream import stream_router
from service.api.ui import PUBLIC_PATHS, ui_router
from service.auth import load_keys
from service.batching import RequestBatcher
from service.config import Settings, get_settings
from service.errors import (
    BackendUnavailable,
    BadRequestBody,
    BodyTooLarge,
    DeadlineExceeded,
    FaceposeError,
    TooManyImages,
    UnsupportedImage,
)
from service.estimate import decode_images, fill_entries
from service.grpc.server import GrpcServer
from service.metrics import (
    BACKEND_READY,
    describe_build,
)
from service.pipeline.pipeline import estimate
from service.pipeline.solve import load_canonical_face
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from service.runtime.model_config import model_hashes

T = TypeVar("T")
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorResponse}
    for status in (400, 401, 413, 415, 422, 429, 503, 504)
}


class JSONResponse(StarletteJSONResponse):
    """orjson: several times faster than json on the large float arrays of meshes."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error_dict(code, message)}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the request body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_images(request: Request, settings: Settings) -> tuple[list[bytes], bool]:
    """The encoded images of a request: the raw body, or the multipart parts named `images`,
    and whether it was a raw body (whose one image failing fails the request)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in IMAGE_CONTENT_TYPES or content_type == "application/octet-stream":
        return [await read_body(request, settings.max_body_bytes)], True
    if content_type == "multipart/form-data":
        # The whole body is read under the size limit first, chunked or not, and parsed after.
        body = await read_body(request, settings.max_body_bytes)

        async def chunks() -> AsyncIterator[bytes]:
            yield body

        parser = MultiPartParser(request.headers, chunks(),
                                 max_files=settings.max_images_per_request,
                                 max_fields=settings.max_images_per_request,
                                 max_part_size=settings.max_image_bytes)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            if exc.message.startswith("Too many"):
                raise TooManyImages(f"{exc.message}; the limit is "
                                    f"{settings.max_images_per_request} images") from None
            raise BadRequestBody(f"malformed multipart body: {exc.message}") from None
        parts = form.getlist("images")
        if not parts:
            raise BadRequestBody("multipart body has no parts named 'images'")
        if len(parts) > settings.max_images_per_request:
            raise TooManyImages(
                f"{len(parts)} images; the limit is {settings.max_images_per_request}"
            )
        images = []
        for part in parts:
            if isinstance(part, UploadFile):
                images.append(await part.read())
            else:
                images.append(part.encode())
        return images, False
    if not content_type:
        raise UnsupportedImage("missing Content-Type: send image/jpeg, image/png, image/webp "
                               "or multipart/form-data")
    raise UnsupportedImage(f"unsupported Content-Type {content_type!r}: send image/jpeg, "
                           "image/png, image/webp or multipart/form-data with parts 'images'")


async def within(seconds: float, work: Awaitable[T]) -> T:
    """The server-side deadline of a request."""
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise DeadlineExceeded(f"not done within the {seconds:g} s request deadline") from None


async def is_ready(app: FastAPI) -> bool:
    """Ready: not draining for shutdown, and the inference runtime ready."""
    ready = not app.state.draining and await run_in_threadpool(app.state.runtime.is_ready)
    BACKEND_READY.set(int(ready))
    return ready


async def watch_readiness(app: FastAPI, grpc_server: GrpcServer | None,
                          period_s: float = 1.0) -> None:
    """Keep the readiness gauge and the gRPC health service current between probes."""
    while True:
        ready = await is_ready(app)
        if grpc_server is not None:
            await grpc_server.set_serving(ready)
        await asyncio.sleep(period_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = create_runtime(settings)
        load_canonical_face()
        gate = AdmissionGate(settings.max_in_flight_requests)
        batcher = RequestBatcher(partial(estimate, runtime), settings.batch_max_images,
                                 settings.batch_max_wait_ms / 1000, settings.batch_workers,
                                 in_service=lambda: gate.admitted)
        app.state.runtime, app.state.batcher = runtime, batcher
        app.state.draining = False
        app.state.gate = gate
        describe_build(settings.runtime, model_hashes(settings.model_repository))
        batcher.start()
        grpc_server = (GrpcServer(settings, runtime, batcher, app.state.gate)
                       if settings.grpc_port else None)
        if grpc_server is not None:
            await grpc_server.start()
        watch = asyncio.create_task(watch_readiness(app, grpc_server))
        yield
        watch.cancel()
        if grpc_server is not None:
            await grpc_server.stop(grace_s=settings.shutdown_grace_s)
        await batcher.stop()
        runtime.close()

    app = FastAPI(
        title="facepose",
        version=__version__,
        description="6DoF head pose and dense 3D face mesh for every face in a photo.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware,
                           allow_origins=[o.strip() for o in settings.cors_origins.split(",")],
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "X-Request-ID",
                                          "Content-Type"],
                           expose_headers=["X-Request-ID", "Retry-After"])

    def refusal(exc: FaceposeError) -> JSONResponse:
        response = error_response(exc.status, exc.code, exc.message)
        if exc.status in (429, 503):
            response.headers["Retry-After"] = str(settings.retry_after_s)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(FaceposeError)
    async def facepose_error(request: Request, exc: FaceposeError) -> JSONResponse:
        return refusal(exc)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback by the server; the client learns nothing internal.
        return error_response(500, "internal_error", "internal error")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return error_response(422, "bad_option", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    api_keys = load_keys(settings.api_keys, settings.api_keys_file)
    open_paths = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", *PUBLIC_PATHS}
    if not settings.protect_health_and_metrics:
        open_paths |= {"/healthz", "/readyz", "/metrics"}

    # The last added runs first: every request is observed, refused ones included.
    app.add_middleware(RequireApiKey, keys=api_keys, open_paths=open_paths, refusal=refusal)
    app.add_middleware(ObserveRequests)

    query_options = image_query(settings)

    @app.post(
        "/v1/faces",
        response_model=schemas.FacesResponse,
        responses=ERROR_RESPONSES,
        summary="Find faces; return each one's 6DoF pose and, on request, landmarks and mesh",
        openapi_extra={"requestBody": image_request_body(settings.max_images_per_request)},
    )
    async def faces(request: Request,
                    query: Annotated[ImageQuery, Depends(query_options)]) -> Response:
        options = query.options
        runtime: InferenceRuntime = request.app.state.runtime
        with request.app.state.gate.admit("http"):
            if not await run_in_threadpool(runtime.is_ready):
                raise BackendUnavailable("the inference server is not ready")
            encoded, raw_body = await read_images(request, settings)
            options.boxes = parse_boxes(query.boxes_json, len(encoded),
                                        settings.max_boxes_per_image)
            entries, images = await run_in_threadpool(decode_images, settings, encoded,
                                                       options, raw_body)
            results = await within(settings.request_timeout_s,
                                   request.app.state.batcher.submit(images))
            entries = await run_in_threadpool(fill_entries, entries, results, options.include)
        return JSONResponse({"images": entries})

    app.include_router(render_router(settings, query_options))
    app.include_router(stream_router(settings))
    app.include_router(ui_router())

    @app.get("/v1/mesh/topology", response_model=schemas.MeshTopology)
    async def mesh_topology() -> Response:
        face = load_canonical_face()
        return JSONResponse({
            "num_vertices": len(face.vertices_mm),
            "triangles": face.triangles.tolist(),
            "landmarks68": face.landmarks68.tolist(),
            "canonical_vertices_mm": face.vertices_mm.round(4).tolist(),
        }, headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/v1/models", response_model=schemas.ModelsResponse)
    async def models(request: Request) -> Response:
        runtime: InferenceRuntime = request.app.state.runtime
        return JSONResponse({
            "runtime": settings.runtime,
            "ready": await run_in_threadpool(runtime.is_ready),
            "models": [{
                "name": spec.name,
                "max_batch_size": spec.max_batch_size,
                "inputs": {t.name: list(t.dims) for t in spec.inputs},
                "outputs": {t.name: list(t.dims) for t in spec.outputs},
            } for spec in runtime.specs.values()],
        })

    @app.get("/healthz", response_model=schemas.Health)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", response_model=schemas.Health, responses={503: {"model": schemas.Health}})
    async def readyz(request: Request) -> Response:
        ready = await is_ready(request.app)
        return JSONResponse({"status": "ok" if ready else "not_ready"},
                            status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
