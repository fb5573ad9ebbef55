"""What both transports do around the pipeline: decode a request's images, and put results
back into per-image entries (the REST shape, which gRPC converts from)."""

from __future__ import annotations

from typing import Any

from service.api.options import RequestOptions
from service.api.serialize import error_dict, image_dict
from service.config import Settings
from service.errors import FaceposeError
from service.metrics import FACES_PER_IMAGE, IMAGE_ERRORS, STAGE_SECONDS
from service.pipeline.decode import decode_image
from service.pipeline.pipeline import ImageRequest, ImageResult


def decode_images(settings: Settings, encoded: list[bytes], options: RequestOptions,
                  fail_whole: bool) -> tuple[list[dict[str, Any]], list[ImageRequest]]:
    """Decode every image: an entry per image (errors filled in) and the images to estimate.

    A bad image fails only its own entry, unless ``fail_whole`` (a raw-body request).
    """
    entries: list[dict[str, Any]] = []
    requests: list[ImageRequest] = []
    for index, data in enumerate(encoded):
        try:
            with STAGE_SECONDS.labels("decode").time():
                image = decode_image(data, settings.max_image_bytes, settings.max_image_pixels)
        except FaceposeError as exc:
            IMAGE_ERRORS.labels(exc.code).inc()
            if fail_whole:
                raise
            entries.append({"index": index, "width": None, "height": None, "camera": None,
                            "faces": [], "error": error_dict(exc.code, exc.message)})
            continue
        height, width = image.shape[:2]
        camera = options.camera_for(width, height, settings.default_fov_deg)
        boxes = options.boxes[index] if options.boxes is not None else None
        requests.append(ImageRequest(image, camera, options.pipeline, boxes))
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
