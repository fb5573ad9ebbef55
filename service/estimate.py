"""What both transports do around the pipeline: decode a request's images, and put results
back into per-image entries (the REST shape, which gRPC converts from)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from service.api.options import RequestOptions
from service.api.serialize import error_dict, image_dict
from service.config import Settings
from service.errors import FaceposeError
from service.metrics import FACES_PER_IMAGE, IMAGE_ERRORS, STAGE_SECONDS
from service.pipeline.decode import check_image, decode_pixels, reduction_for
from service.pipeline.pipeline import ImageRequest, ImageResult
from service.pipeline.scale import rescale_boxes, rescale_camera

# Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale while the longer side stays at least this:
# the detectors see 128 and 192 pixels, and a face that would reach the mesh model upsampled
# makes the pipeline decode that image again at a finer scale. High enough that a 1080p frame,
# whose faces are often small, is decoded once at full size rather than twice.
WORKING_SIDE = 1280


def decode_images(settings: Settings, encoded: list[bytes], options: RequestOptions,
                  fail_whole: bool, reduce: bool = True
                  ) -> tuple[list[dict[str, Any]], list[ImageRequest]]:
    """Decode every image: an entry per image (errors filled in) and the images to estimate.

    A bad image fails only its own entry, unless ``fail_whole`` (a raw-body request).
    reduce: whether large JPEGs may be decoded at reduced scale (results are full-size either
    way; a caller that needs the full-size pixels themselves passes False).
    """
    entries: list[dict[str, Any]] = []
    requests: list[ImageRequest] = []
    for index, data in enumerate(encoded):
        try:
            with STAGE_SECONDS.labels("decode").time():
                image_format, full_width, full_height = check_image(
                    data, settings.max_image_bytes, settings.max_image_pixels)
                reduction = (reduction_for(image_format, full_width, full_height,
                                           WORKING_SIDE) if reduce else 1)
                image = decode_pixels(data, image_format, reduction)
        except FaceposeError as exc:
            IMAGE_ERRORS.labels(exc.code).inc()
            if fail_whole:
                raise
            entries.append({"index": index, "width": None, "height": None, "camera": None,
                            "faces": [], "error": error_dict(exc.code, exc.message)})
            continue
        # Decoded at full size, the pixels say the size; reduced, the header does (each side
        # of a reduced decode is rounded up, so its shape cannot be scaled back).
        height, width = image.shape[:2]
        if reduction > 1:
            width, height = full_width, full_height
        camera = options.camera_for(width, height, settings.default_fov_deg)
        boxes = options.boxes[index] if options.boxes is not None else None
        if reduction > 1:
            camera = rescale_camera(camera, 1 / reduction)
            boxes = None if boxes is None else rescale_boxes(
                np.asarray(boxes, np.float64).reshape(-1, 4), 1 / reduction)
        requests.append(ImageRequest(image, camera, options.pipeline, boxes, reduction,
                                     partial(decode_pixels, data, image_format)))
        entries.append({"index": index, "width": width, "height": height})
    return entries, requests


def fill_entries(entries: list[dict[str, Any]], results: list[ImageResult],
                 include: frozenset[str]) -> list[dict[str, Any]]:
    """Put each decoded image's result into its entry, in order."""
    decoded = iter(results)
    with STAGE_SECONDS.labels("serialize").time():
        for slot, entry in enumerate(entries):
            if "faces" in entry:
                continue
            result = next(decoded)
            entries[slot] = image_dict(entry["index"], entry["width"], entry["height"], result,
                                       include)
            FACES_PER_IMAGE.observe(len(result.faces))
    return entries
