"""What /v1/faces and /v1/render share: the query parameters, as one FastAPI dependency, and
the request body's OpenAPI description."""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations at run
# time, and they refer to names local to image_query.

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query

from service.api.options import INCLUDABLE, RequestOptions, parse_options
from service.config import Settings
from service.pipeline.decode import SUPPORTED_FORMATS

IMAGE_CONTENT_TYPES = frozenset(SUPPORTED_FORMATS.values())
_BINARY = {"type": "string", "format": "binary"}


def image_request_body(max_images: int) -> dict[str, Any]:
    """The OpenAPI request body: one image as the raw body, or up to ``max_images`` as
    multipart parts named `images`."""
    return {"required": True, "content": {
        **{media_type: {"schema": _BINARY} for media_type in sorted(IMAGE_CONTENT_TYPES)},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["images"],
            "properties": {"images": {"type": "array", "minItems": 1, "maxItems": max_images,
                                      "items": _BINARY}},
        }},
    }}


@dataclass
class ImageQuery:
    options: RequestOptions
    boxes_json: str | None  # parsed once the number of images is known


def image_query(settings: Settings) -> Callable[..., Awaitable[ImageQuery]]:
    """The dependency: the options validated, or BadOption / 422 before any work is done."""

    # async: FastAPI would run a plain function in its thread pool, a hop per request.
    async def query(
        include: Annotated[list[str], Query(
            description=f"Any of {', '.join(INCLUDABLE)} (comma-separated or repeated); poses "
                        "and boxes are always returned.")] = [],  # noqa: B006
        max_faces: Annotated[int | None, Query(description="Faces per image, best first.")
                             ] = None,
        min_score: Annotated[float | None, Query(description="Drop detections below this "
                                                 f"score (default {settings.default_min_score})."
                                                 )] = None,
        min_presence: Annotated[float | None, Query(
            description="Drop faces whose face-presence score is below this (default "
                        f"{settings.default_min_presence}; 0 keeps every face).")] = None,
        fx: Annotated[float | None, Query(description="Focal length x, pixels.")] = None,
        fy: Annotated[float | None, Query(description="Focal length y, pixels.")] = None,
        cx: Annotated[float | None, Query(description="Principal point x, pixels.")] = None,
        cy: Annotated[float | None, Query(description="Principal point y, pixels.")] = None,
        boxes: Annotated[str | None, Query(
            description="JSON: per image a list of [x1, y1, x2, y2] face boxes (tight around "
                        "the face, brows to chin) to use instead of the detector.")] = None,
    ) -> ImageQuery:
        return ImageQuery(parse_options(settings, include=include, max_faces=max_faces,
                                        min_score=min_score, min_presence=min_presence,
                                        fx=fx, fy=fy, cx=cx, cy=cy), boxes)

    return query
