"""facepose in your own process: the models opened once, no server.

    from service.clients.local import FacePose

    with FacePose() as facepose:
        answer = facepose.estimate(["photo.jpg"], include=["landmarks68"], quality="accurate")
    for face in answer["images"][0]["faces"]:
        print(face["pose"]["euler_deg"], face["pose"]["uncertainty_deg"])

``estimate`` returns what ``POST /v1/faces`` answers, as the same dicts, computed by the same
decode and pipeline under the same limits and options; ``facepose estimate`` (the CLI) is this.
It runs the embedded runtime unless the settings name Triton.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from service.app.images import (
    EncodedImages,
    ImageOutcome,
    check_image_count,
    decode_request_images,
)
from service.app.options import RequestOptions, options_model, validate_options
from service.app.overlay import ImageFormat, overlay
from service.config import Settings
from service.http.body import checked_boxes
from service.http.serialize import images_dict
from service.pipeline.estimate import estimate_faces
from service.runtime import create_runtime

ImageSource = bytes | str | Path


class FacePose:
    """The pipeline with its models open; one thread at a time (a pool of them for more)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings(grpc_port=0)
        self.options_model = options_model(self.settings)
        self.runtime = create_runtime(self.settings)

    def estimate(self, images: Sequence[ImageSource],
                 boxes: Sequence[Sequence[Sequence[float]] | None] | None = None,
                 **options: Any) -> dict[str, Any]:
        """One entry per image, in order, as ``/v1/faces`` answers: an image that fails gets
        its ``error`` and the others go on. ``images``: encoded bytes or paths; ``boxes``: per
        image its face boxes ([x1, y1, x2, y2] pixels) or None for the detector; ``options``:
        the query parameters of ``/v1/faces`` (``include``, ``quality``, ``fx``, ...).
        Raises BadOption for an unknown or invalid option, TooManyImages, and OSError for a
        path that cannot be read."""
        outcomes, request_options = self.outcomes(images, boxes, options)
        return images_dict(outcomes, request_options.included)

    def render(self, image: ImageSource, image_format: ImageFormat = "jpeg",
               **options: Any) -> bytes:
        """The image with its faces drawn, encoded, as ``/v1/render`` answers; raises the
        image's error (a FaceposeError) if it cannot be read."""
        (outcome,), request_options = self.outcomes([image], None, options)
        if outcome.error is not None:
            raise outcome.error
        return overlay(outcome, request_options.included, image_format)

    def outcomes(self, images: Sequence[ImageSource],
                 boxes: Sequence[Sequence[Sequence[float]] | None] | None,
                 options: dict[str, Any]) -> tuple[list[ImageOutcome], RequestOptions]:
        """The typed records behind ``estimate``: per image its outcome (a result with faces,
        boxes, poses and meshes in their own frames and units, or an error), and the options as
        validated. Same arguments and errors as ``estimate``."""
        request_options = validate_options(self.options_model, options)
        data = [Path(image).read_bytes() if isinstance(image, str | Path) else bytes(image)
                for image in images]
        check_image_count(self.settings, len(data))
        given = None if boxes is None else checked_boxes(
            boxes, len(data), self.settings.max_boxes_per_image)  # the query parameter's rules
        outcomes = decode_request_images(self.settings, EncodedImages(data, given),
                                         request_options)
        decoded = [outcome for outcome in outcomes if outcome.request is not None]
        results = estimate_faces(self.runtime, [outcome.request for outcome in decoded
                                                if outcome.request is not None])
        for outcome, result in zip(decoded, results, strict=True):
            outcome.result = result
        return outcomes, request_options

    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> FacePose:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
