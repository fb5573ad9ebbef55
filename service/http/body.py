"""Reading the images of a /v1/faces or /v1/render request: the raw body, the multipart parts
named `images`, or a JSON body of base64 images, under the size limits, with the `boxes` query
parameter; and the request body's OpenAPI description."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import AsyncIterator
from numbers import Real
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.app.admission import Held
from service.app.images import EncodedImages
from service.app.options import check_boxes
from service.config import Settings
from service.errors import (
    BadOption,
    BadRequestBody,
    BodyReadTimeout,
    BodyTooLarge,
    OneImageOnly,
    TooManyImages,
    UnsupportedImage,
)
from service.pipeline.decode import SUPPORTED_FORMATS

IMAGE_CONTENT_TYPES = frozenset(SUPPORTED_FORMATS.values())
# The common misspelling of image/jpeg.
CONTENT_TYPE_ALIASES = {"image/jpg": "image/jpeg"}
_BINARY = {"type": "string", "format": "binary"}
JSON_SHAPE = '{"images": [{"data": "<base64>", "boxes": [[x1, y1, x2, y2], ...]}, ...]}'
# What a browser's FileReader.readAsDataURL puts before the base64: data:[<media type>];base64,
DATA_URL = re.compile(r"data:[^,;]*(;[^,;]+)*,")
# base64 carries 3 bytes in 4 characters: a JSON body may be that much larger than the images it
# holds, and a little more for its keys and punctuation; the limits apply to the images.
JSON_BODY_SLACK_BYTES = 64 * 1024


def image_request_body(max_images: int) -> dict[str, Any]:
    """The OpenAPI request body: one image as the raw body, or up to ``max_images`` as
    multipart parts named `images`."""
    return {"required": True, "content": {
        **{media_type: {"schema": _BINARY} for media_type in sorted(IMAGE_CONTENT_TYPES)},
        "application/json": {"schema": {
            "type": "object", "required": ["images"], "additionalProperties": False,
            "properties": {"images": {"type": "array", "minItems": 1, "maxItems": max_images,
                                      "items": {"type": "object", "required": ["data"],
                                                "additionalProperties": False,
                                                "properties": {
                                                    "data": {
                                                        "type": "string", "format": "byte",
                                                        "description": "The encoded image, "
                                                        "base64, or a data URL of it "
                                                        "(data:image/jpeg;base64,...)."},
                                                    "boxes": {
                                                        "type": ["array", "null"],
                                                        "items": {"type": "array",
                                                                  "items": {"type": "number"},
                                                                  "minItems": 4,
                                                                  "maxItems": 4},
                                                        "description": "This image's face "
                                                        "boxes, [x1, y1, x2, y2] pixels, as "
                                                        "the boxes parameter takes; left out "
                                                        "or null: the detector."}}}}},
        }},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["images"],
            "properties": {"images": {"type": "array", "minItems": 1, "maxItems": max_images,
                                      "items": _BINARY}},
        }},
    }}


def content_type_of(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return CONTENT_TYPE_ALIASES.get(content_type, content_type)


def body_read_deadline_s(settings: Settings, expected_bytes: int) -> float:
    """How long a body of ``expected_bytes`` may take to arrive."""
    return settings.body_read_timeout_s + expected_bytes / settings.body_read_min_bytes_per_s


async def read_body(request: Request, settings: Settings, held: Held,
                    limit: int | None = None) -> bytes:
    """The body, under the size limit (``limit``, else the settings'), holding its bytes in the
    memory budget as they come, within its deadline (BodyReadTimeout past it)."""
    limit = settings.max_body_bytes if limit is None else limit
    declared = request.headers.get("content-length")
    expected = int(declared) if declared is not None and declared.isdigit() else 0
    if expected > limit:
        raise BodyTooLarge(f"the request body exceeds {limit} bytes")
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks, size = [], 0
    stream = aiter(request.stream())
    while True:
        # A chunked body's deadline grows with what has come so far.
        deadline_s = body_read_deadline_s(settings, max(expected, size))
        try:
            chunk = await asyncio.wait_for(anext(stream), started + deadline_s - loop.time())
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise BodyReadTimeout(f"the request body did not arrive within {deadline_s:g} s "
                                  f"({size} bytes came)") from None
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body exceeds {limit} bytes")
        held.add(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


async def read_multipart(request: Request, settings: Settings, held: Held) -> list[bytes]:
    # The whole body is read under the size limit first, chunked or not, and parsed after.
    body = await read_body(request, settings, held)

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    limit = settings.max_images_per_request
    parser = MultiPartParser(request.headers, chunks(), max_files=limit, max_fields=limit,
                             max_part_size=settings.max_image_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many"):
            raise TooManyImages(f"more than {limit} parts; the limit is {limit} images") from None
        raise BadRequestBody(f"malformed multipart body: {exc.message}") from None
    parts = form.getlist("images")
    if not parts:
        raise BadRequestBody("multipart body has no parts named 'images'")
    return [await part.read() if isinstance(part, UploadFile) else part.encode()
            for part in parts]


def base64_image(text: str, index: int) -> bytes:
    """``images[index].data``: base64, alone or as a data URL; BadRequestBody if it is not."""
    if text.startswith("data:"):
        prefix = DATA_URL.match(text)
        if prefix is None or prefix.group(1) != ";base64":
            raise BadRequestBody(f"images[{index}].data is a data URL without base64: send "
                                 "data:<type>;base64,<data> or the base64 alone")
        text = text[prefix.end():]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestBody(f"images[{index}].data is not base64") from None


async def read_json_images(request: Request, settings: Settings, held: Held
                           ) -> tuple[list[bytes], list[object] | None]:
    """The images of a JSON body and each one's ``boxes`` as sent (None where no image has
    any); BadRequestBody for malformed JSON, shape or base64, and the limits on the decoded
    images (an image that is not one fails its own entry later)."""
    body = await read_body(request, settings, held,
                           -(-settings.max_body_bytes * 4 // 3) + JSON_BODY_SLACK_BYTES)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        where = (f"{exc.msg} at byte {exc.pos}" if isinstance(exc, json.JSONDecodeError)
                 else "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "too deep")
        raise BadRequestBody(f"malformed JSON body ({where}); send {JSON_SHAPE}") from None
    images = value.get("images") if isinstance(value, dict) else None
    if (not isinstance(images, list) or not images or set(value) != {"images"}
            or not all(isinstance(item, dict) and "data" in item
                       and set(item) <= {"data", "boxes"}
                       and isinstance(item["data"], str) for item in images)):
        raise BadRequestBody(f"a JSON body is {JSON_SHAPE}")
    data = [base64_image(item["data"], index) for index, item in enumerate(images)]
    if sum(map(len, data)) > settings.max_body_bytes:
        raise BodyTooLarge(f"the images exceed {settings.max_body_bytes} bytes")
    boxes = [item.get("boxes") for item in images]
    return data, None if all(b is None for b in boxes) else boxes


async def read_images(request: Request, settings: Settings, boxes_json: str | None,
                      held: Held, one_image: bool = False) -> EncodedImages:
    """The encoded images of a request, and the client's boxes for each. A raw body is one
    image whose failure fails the request (``EncodedImages.whole``); with ``one_image`` (a
    render) so is a single part, and more than one is OneImageOnly."""
    content_type = content_type_of(request)
    body_boxes = None
    if content_type in IMAGE_CONTENT_TYPES or content_type == "application/octet-stream":
        data, whole = [await read_body(request, settings, held)], True
    elif content_type == "multipart/form-data":
        data, whole = await read_multipart(request, settings, held), False
    elif content_type == "application/json":
        (data, body_boxes), whole = await read_json_images(request, settings, held), False
    elif not content_type:
        raise UnsupportedImage("missing Content-Type: send image/jpeg, image/png, image/webp, "
                               "multipart/form-data or application/json")
    else:
        raise UnsupportedImage(f"unsupported Content-Type {content_type!r}: send image/jpeg, "
                               "image/png, image/webp, multipart/form-data with parts "
                               f"'images', or application/json {JSON_SHAPE}")
    if one_image and len(data) != 1:
        raise OneImageOnly(f"/v1/render draws one image and this request has {len(data)}: "
                           "send one part named 'images' (or use /v1/faces for several)")
    if body_boxes is None:
        boxes = parse_boxes(boxes_json, len(data), settings.max_boxes_per_image)
    elif boxes_json is not None:
        raise BadOption("boxes go either in the query or beside each image's data in the JSON "
                        "body, not both")
    else:
        boxes = checked_boxes(body_boxes, len(data), settings.max_boxes_per_image, "images[{}]"
                              ".boxes")
    return EncodedImages(data, boxes, whole or one_image)


def parse_boxes_json(text: str) -> object:
    """The ``boxes`` parameter's JSON, unchecked; BadOption if it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadOption("boxes must be JSON: per image a list of [x1, y1, x2, y2]") from None


def parse_boxes(text: str | None, image_count: int, limit: int
                ) -> list[np.ndarray | None] | None:
    """``boxes``: JSON, per image a list of [x1, y1, x2, y2] face boxes in pixels."""
    return None if text is None else checked_boxes(parse_boxes_json(text), image_count, limit)


def checked_boxes(value: object, image_count: int, limit: int, where: str = "boxes[{}]"
                  ) -> list[np.ndarray | None]:
    """Per image its face boxes ([x1, y1, x2, y2] pixels, as (N, 4)) or None (the detector
    finds them); the ``boxes`` parameter's rules, for JSON and for the Python API alike.
    ``where``: how an error names image i's boxes."""
    if not isinstance(value, list | tuple) or len(value) != image_count:
        raise BadOption(f"boxes must be a JSON list with one entry per image ({image_count})")
    parsed: list[np.ndarray | None] = []
    for index, image_boxes in enumerate(value):
        if image_boxes is None:
            parsed.append(None)
            continue
        if isinstance(image_boxes, np.ndarray):
            image_boxes = image_boxes.tolist()
        if not isinstance(image_boxes, list | tuple) or not all(
            isinstance(box, list | tuple | np.ndarray) and len(box) == 4
            and all(isinstance(v, Real) and not isinstance(v, bool) for v in box)
            for box in image_boxes
        ):
            raise BadOption(f"{where.format(index)} must be a list of [x1, y1, x2, y2] number "
                            "lists")
        parsed.append(check_boxes(np.array(image_boxes, np.float64).reshape(-1, 4),
                                  where.format(index), limit))
    return parsed
