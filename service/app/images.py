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


@dataclass(frozen=True)
class DecodePlan:
    """How an image will be decoded, from its header: format, full size, JPEG reduction."""

    image_format: str
    width: int
    height: int
    reduction: int

    @property
    def megapixels(self) -> float:
        """What its decoded pixels take, each reduced side rounded up."""
        return -(-self.width // self.reduction) * -(-self.height // self.reduction) / 1e6


def plan_decodes(settings: Settings, images: EncodedImages, options: RequestOptions,
                 reduce: bool = True) -> list[DecodePlan | FaceposeError]:
    """Each image's plan, read from its header once, or the error that fails it.

    reduce: whether large JPEGs may be decoded at reduced scale (results are full-size either
    way; a caller that needs the full-size pixels themselves passes False).
    """
    plans: list[DecodePlan | FaceposeError] = []
    for index, data in enumerate(images.data):
        try:
            image_format, width, height = check_image(data, settings.max_image_bytes,
                                                      settings.max_image_pixels)
        except FaceposeError as exc:
            plans.append(exc)
            continue
        reduction = 1
        if reduce:
            # Never so reduced that the smallest face searched for is lost in the pixels (a
            # client's boxes search for none).
            given = images.boxes is not None and images.boxes[index] is not None
            reduction = min(reduction_for(image_format, width, height,
                                          settings.decode_working_side),
                            max_reduction_for(None if given else options.min_face_px_searched))
        plans.append(DecodePlan(image_format, width, height, reduction))
    return plans


def decoded_megapixels(plans: list[DecodePlan | FaceposeError]) -> float:
    """The megapixels decoding will hold; an image that will fail to decode counts for none."""
    return sum(plan.megapixels for plan in plans if isinstance(plan, DecodePlan))


def decode_request_images(settings: Settings, images: EncodedImages, options: RequestOptions,
                          reduce: bool = True,
                          plans: list[DecodePlan | FaceposeError] | None = None
                          ) -> list[ImageOutcome]:
    """Decode every image: an outcome per image, its ``request`` or its ``error`` set.

    reduce: as ``plan_decodes``; plans: theirs, where the caller has made them already.
    """
    if plans is None:
        plans = plan_decodes(settings, images, options, reduce)
    outcomes = []
    for index, (data, plan) in enumerate(zip(images.data, plans, strict=True)):
        try:
            if isinstance(plan, FaceposeError):
                raise plan
            with STAGE_SECONDS.labels("decode").time():
                image = decode_pixels(data, plan.image_format, plan.reduction)
            # Decoded at full size, the pixels say the size; reduced, the header does (each
            # side of a reduced decode is rounded up, so its shape cannot be scaled back).
            height, width = image.shape[:2]
            reduction = plan.reduction
            if reduction > 1:
                width, height = plan.width, plan.height
            # Intrinsics that cannot describe this image fail it, not the request's others.
            camera = options.camera_for(width, height, settings.default_fov_deg)
        except FaceposeError as exc:
            IMAGE_ERRORS.labels(exc.code).inc()
            if images.whole:
                raise
            outcomes.append(ImageOutcome(index, error=exc))
            continue
        boxes = images.boxes[index] if images.boxes is not None else None
        if reduction > 1:
            camera = rescale_camera(camera, 1 / reduction)
            boxes = None if boxes is None else rescale_boxes(boxes, 1 / reduction)
        request = ImageRequest(image, camera, options.pipeline, boxes, reduction,
                               partial(decode_pixels, data, plan.image_format))
        outcomes.append(ImageOutcome(index, width, height, request, encoded=data))
    return outcomes
