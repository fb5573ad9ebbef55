"""`POST /v1/render`: the /v1/faces request, answered with the photo drawn over.

Input, options, limits, admission and the deadline are those of /v1/faces (the same helpers);
only the answer differs: one JPEG or PNG. A render draws one image, so a multipart request must
hold exactly one part named `images`; more is a 400 `one_image_only` (rendering the first and
silently dropping the rest would hide a client's mistake).
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at run time.

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api.options import parse_boxes
from service.api.query import ImageQuery, image_request_body
from service.config import Settings
from service.errors import BackendUnavailable, BadRequestBody
from service.estimate import decode_images
from service.metrics import FACES_PER_IMAGE, STAGE_SECONDS
from service.pipeline.decode import decode_pixels
from service.pipeline.pipeline import ImageRequest, ImageResult
from service.pipeline.render import FORMATS, encode, render
from service.runtime.base import InferenceRuntime

ImageFormat = Literal["jpeg", "png"]


class OneImageOnly(BadRequestBody):
    code = "one_image_only"


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


def draw(encoded: bytes, image: ImageRequest, result: ImageResult, include: frozenset[str],
         image_format: ImageFormat) -> bytes:
    """The picture: ``result`` (full-size pixels) drawn on the full-size photo."""
    with STAGE_SECONDS.labels("render").time():
        photo = image.image if image.reduction == 1 else decode_pixels(encoded)
        return encode(render(photo, result, include), image_format)


BINARY = {"schema": {"type": "string", "format": "binary"}}


def render_router(settings: Settings,
                  query_options: Callable[..., Awaitable[ImageQuery]]) -> APIRouter:
    """The route, reading its input with the same helpers and query options as /v1/faces."""
    # Imported here, not at the top: rest.py imports this module to register the route.
    from service.api.rest import ERROR_RESPONSES, read_images, within

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
            "many faces were drawn."),
        openapi_extra={"requestBody": image_request_body(max_images=1)},
    )
    async def render_image(
        request: Request,
        query: Annotated[ImageQuery, Depends(query_options)],
        image_format: Annotated[ImageFormat | None, Query(
            alias="format", description="jpeg or png; overrides the Accept header.")] = None,
    ) -> Response:
        options = query.options
        chosen = negotiate_format(image_format, request.headers.get("accept"))
        runtime: InferenceRuntime = request.app.state.runtime
        with request.app.state.gate.admit("http"):
            if not await run_in_threadpool(runtime.is_ready):
                raise BackendUnavailable("the inference server is not ready")
            encoded, _ = await read_images(request, settings)
            if len(encoded) != 1:
                raise OneImageOnly(f"/v1/render draws one image and this request has "
                                   f"{len(encoded)}: send one part named 'images' (or use "
                                   "/v1/faces for several)")
            options.boxes = parse_boxes(query.boxes_json, 1, settings.max_boxes_per_image)
            # One image: its failure is the request's, with the status /v1/faces gives it.
            # Estimated as /v1/faces does (which may decode a large JPEG reduced), so the two
            # give the same numbers; drawn on the full-size photo.
            _, images = await run_in_threadpool(decode_images, settings, encoded, options, True)
            (result,) = await within(settings.request_timeout_s,
                                     request.app.state.batcher.submit(images))
            FACES_PER_IMAGE.observe(len(result.faces))
            picture = await run_in_threadpool(draw, encoded[0], images[0], result,
                                              options.include, chosen)
        media_type, _ = FORMATS[chosen]
        return Response(picture, media_type=media_type,
                        headers={"X-Face-Count": str(len(result.faces)),
                                 "Vary": "Accept"})

    return router
