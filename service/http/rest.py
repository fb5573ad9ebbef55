"""REST transport: FastAPI routes over the application core.

``create_app(core)`` is the HTTP side of a gateway: the routes, their error shape and the
middleware; the core's lifetime is the app's.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at run
# time, and they refer to names local to create_app.

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from pydantic import Field, create_model
from starlette.concurrency import run_in_threadpool

from service import __version__
from service.app.admission import Held
from service.app.core import Core
from service.app.flow import estimate_request
from service.app.options import RequestOptions
from service.http import schemas
from service.http.body import image_request_body, read_images
from service.http.info import info_router
from service.http.middleware import DrainConnections, ObserveRequests, RequireApiKey
from service.http.render import render_router
from service.http.responses import ERROR_RESPONSES, JSONResponse, install_refusals
from service.http.serialize import images_dict
from service.http.ui import PUBLIC_PATHS, docs_router, ui_router
from service.http.websocket import stream_router

BOXES_FIELD = (str | None, Field(
    default=None, description="JSON: per image a list of [x1, y1, x2, y2] face boxes (tight "
                              "around the face, brows to chin) to use instead of the detector, "
                              "or null for the detector on that image."))


def create_app(core: Core) -> FastAPI:
    settings = core.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await core.start()
        yield
        await core.stop()

    app = FastAPI(
        title="facepose",
        version=__version__,
        description="6DoF head pose and dense 3D face mesh for every face in a photo.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        docs_url=None, redoc_url=None,  # served by docs_router, without a CDN
    )
    app.state.core = core

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware,
                           allow_origins=[o.strip() for o in settings.cors_origins.split(",")],
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "X-Request-ID",
                                          "Content-Type"],
                           expose_headers=["X-Request-ID", "Retry-After"])

    refusal = install_refusals(app, settings.retry_after_s)

    open_paths = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", *PUBLIC_PATHS}
    if not settings.protect_health_and_metrics:
        open_paths |= {"/healthz", "/readyz", "/metrics"}

    # The last added runs first: every request is observed, refused ones included.
    app.add_middleware(RequireApiKey, keys=core.api_keys, open_paths=open_paths,
                       refusal=refusal)
    app.add_middleware(DrainConnections, draining=lambda: core.draining,
                       stopping=lambda: core.stopping, refusal=refusal)
    app.add_middleware(ObserveRequests)

    faces_query = create_model("FacesQuery", __base__=core.options_model, boxes=BOXES_FIELD)

    @app.post(
        "/v1/faces",
        response_model=schemas.FacesResponse,
        responses=ERROR_RESPONSES,
        summary="Find faces; return each one's 6DoF pose and, on request, landmarks and mesh",
        openapi_extra={"requestBody": image_request_body(settings.max_images_per_request)},
    )
    async def faces(request: Request, query: Annotated[faces_query, Query()]) -> Response:
        options: RequestOptions = query

        async def read(held: Held) -> Any:
            return await read_images(request, settings, query.boxes, held)

        outcomes = await estimate_request(core, "http", options, read)
        return JSONResponse(await run_in_threadpool(images_dict, outcomes, options.included))

    app.include_router(render_router(core, faces_query))
    app.include_router(stream_router(core))
    app.include_router(ui_router())
    app.include_router(docs_router(app.openapi_url or "/openapi.json", app.title))
    app.include_router(info_router(core))

    return app

