"""A request's images: decoded, each with its camera and boxes, or with the error that failed it.

A bad image fails only its own entry, unless it is the request's only image sent as the raw
body (``EncodedImages.whole``): then its error is the request's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

from service.app.options import RequestOptions
from service.config import Settings
from service.errors import FaceposeError, TooManyImages
from service.metrics import IMAGE_ERRORS, STAGE_SECONDS
from service.pipeline.decode import check_image, decode_pixels, reduction_for
from service.pipeline.detect import max_reduction_for
from service.pipeline.records import ImageRequest, ImageResult
from service.pipeline.scale import rescale_boxes, rescale_camera


@dataclass
class EncodedImages:
    """What a transport read: the encoded images and, per image, the client's face boxes
    ((N, 4) pixels, or None to run the detector)."""

    data: list[bytes]
    boxes: list[np.ndarray | None] | None = None
    whole: bool = False  # one raw image whose failure is the request's


@dataclass
class ImageOutcome:
    """One image of a request: its full size and result, or its error."""

    index: int
    width: int | None = None
    height: int | None = None
    request: ImageRequest | None = None  # what the pipeline was given
    result: ImageResult | None = None
    error: FaceposeError | None = None
    encoded: bytes = field(default=b"", repr=False)


def check_image_count(settings: Settings, count: int) -> None:
    if count > settings.max_images_per_request:
        raise TooManyImages(f"{count} images; the limit is {settings.max_images_per_request}")


def decode_plan(settings: Settings, images: EncodedImages, index: int, options: RequestOptions,
                reduce: bool = True) -> tuple[str, int, int, int]:
    """(format, full width, full height, reduction) of image ``index``, read from its header;
    raises the image's error."""
    image_format, full_width, full_height = check_image(
        images.data[index], settings.max_image_bytes, settings.max_image_pixels)
    if not reduce:
        return image_format, full_width, full_height, 1
    # Never so reduced that the smallest face searched for is lost in the pixels (a client's
    # boxes search for none).
    given = images.boxes is not None and images.boxes[index] is not None
    reduction = min(reduction_for(image_format, full_width, full_height,
                                  settings.decode_working_side),
                    max_reduction_for(None if given else options.min_face_px_searched))
    return image_format, full_width, full_height, reduction


def decoded_megapixels(settings: Settings, images: EncodedImages, options: RequestOptions,
                       reduce: bool = True) -> float:
    """The megapixels decoding ``images`` will hold, from their headers; an image that will
    fail to decode counts for none."""
    total = 0.0
    for index in range(len(images.data)):
        try:
            _, width, height, reduction = decode_plan(settings, images, index, options, reduce)
        except FaceposeError:
            continue
        total += -(-width // reduction) * -(-height // reduction) / 1e6
    return total


def decode_request_images(settings: Settings, images: EncodedImages, options: RequestOptions,
                          reduce: bool = True) -> list[ImageOutcome]:
    """Decode every image: an outcome per image, its ``request`` or its ``error`` set.

    reduce: whether large JPEGs may be decoded at reduced scale (results are full-size either
    way; a caller that needs the full-size pixels themselves passes False).
    """
    outcomes = []
    for index, data in enumerate(images.data):
        try:
            with STAGE_SECONDS.labels("decode").time():
                image_format, full_width, full_height, reduction = decode_plan(
                    settings, images, index, options, reduce)
                image = decode_pixels(data, image_format, reduction)
        except FaceposeError as exc:
            IMAGE_ERRORS.labels(exc.code).inc()
            if images.whole:
                raise
            outcomes.append(ImageOutcome(index, error=exc))
            continue
        # Decoded at full size, the pixels say the size; reduced, the header does (each side
        # of a reduced decode is rounded up, so its shape cannot be scaled back).
        height, width = image.shape[:2]
        if reduction > 1:
            width, height = full_width, full_height
        camera = options.camera_for(width, height, settings.default_fov_deg)
        boxes = images.boxes[index] if images.boxes is not None else None
        if reduction > 1:
            camera = rescale_camera(camera, 1 / reduction)
            boxes = None if boxes is None else rescale_boxes(
                np.asarray(boxes, np.float64).reshape(-1, 4), 1 / reduction)
        request = ImageRequest(image, camera, options.pipeline, boxes, reduction,
                               partial(decode_pixels, data, image_format))
        outcomes.append(ImageOutcome(index, width, height, request, encoded=data))
    return outcomes
