"""`POST /v1/render`: the /v1/faces request, answered with the photo drawn over.

Input, options, limits, admission and the deadline are those of /v1/faces (the same helpers);
only the answer differs: one JPEG or PNG. A render draws one image, so a multipart request must
hold exactly one part named `images`; more is a 400 `one_image_only` (rendering the first and
silently dropping the rest would hide a client's mistake).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time.

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field, create_model
from starlette.concurrency import run_in_threadpool

from service.app.admission import Held
from service.app.core import Core
from service.app.flow import estimate_request
from service.app.images import EncodedImages
from service.app.options import RequestOptions
from service.app.overlay import FORMATS, ImageFormat, overlay
from service.http.body import image_request_body, read_images
from service.http.responses import ERROR_RESPONSES


def negotiate_format(requested: ImageFormat | None, accept: str | None) -> ImageFormat:
    """``format=`` if given; else the better of image/png and image/jpeg by the Accept header
    (RFC 9110: each type takes the q of its most specific matching range, exact type over
    image/* over */*; q=0 means not acceptable). On equal q the exact type wins; then JPEG,
    also when Accept names neither (browsers send `*/*`).
    """
    if requested is not None:
        return requested
    # Per format: (specificity of the best-matching range so far, its q).
    quality = {name: (-1, 0.0) for name in FORMATS}
    for item in (accept or "").split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        for name, (media_type, _) in FORMATS.items():
            specificity = {media_type: 2, "image/*": 1, "*/*": 0}.get(media, -1)
            if specificity > quality[name][0]:
                quality[name] = (specificity, q)
    # On equal q the type named outright beats one a wildcard let in.
    png, jpeg = quality["png"][::-1], quality["jpeg"][::-1]
    return "png" if png[0] > 0 and png > jpeg else "jpeg"


BINARY = {"schema": {"type": "string", "format": "binary"}}
FORMAT_FIELD = (ImageFormat | None, Field(
    default=None, description="jpeg or png; overrides the Accept header."))


def render_router(core: Core, faces_query: type[RequestOptions]) -> APIRouter:
    """The route: the query of /v1/faces and `format`, the same request flow."""
    settings = core.settings
    render_query = create_model("RenderQuery", __base__=faces_query, format=FORMAT_FIELD)
    router = APIRouter()

    @router.post(
        "/v1/render",
        response_class=Response,
        responses={200: {"content": {media_type: BINARY for media_type, _ in FORMATS.values()},
                         "description": "The image with every face drawn on it."},
                   **ERROR_RESPONSES},
        summary="The image with each face's box, score, mesh, head axes and angles drawn on it",
        description=(
            "Takes what POST /v1/faces takes (one image: a raw body, or one multipart part "
            "named `images`) and answers a JPEG or PNG of the same size: per face its box and "
            "score, the mesh wireframe (include=landmarks / landmarks68 draw points instead, "
            "include=iris the irises), the head's axes from the nose tip (x red: the "
            "subject's left, y green: up, z blue: out of the face) and yaw, pitch and roll. "
            "Parts of the face the camera cannot see are drawn dimmer. The format comes from "
            "`format`, else the Accept header, else JPEG. The header X-Face-Count says how "
            "many faces were drawn, X-Quality which preset ran."),
        openapi_extra={"requestBody": image_request_body(max_images=1)},
    )
    async def render_image(request: Request,
                           query: Annotated[render_query, Query()]) -> Response:
        options: Any = query
        chosen = negotiate_format(options.format, request.headers.get("accept"))

        async def read(held: Held) -> EncodedImages:
            # One image: its failure is the request's, with the status /v1/faces gives it.
            return await read_images(request, settings, options.boxes, held, one_image=True)

        # Estimated as /v1/faces does (which may decode a large JPEG reduced), so the two give
        # the same numbers; drawn on the full-size photo.
        (outcome,) = await estimate_request(core, "http", options, read)
        assert outcome.result is not None
        picture = await run_in_threadpool(overlay, outcome, options.included, chosen)
        media_type, _ = FORMATS[chosen]
        return Response(picture, media_type=media_type,
                        headers={"X-Face-Count": str(len(outcome.result.faces)),
                                 "X-Quality": outcome.result.quality, "Vary": "Accept"})

    return router
