"""An image's outcome drawn over its photo, encoded: what `/v1/render` answers."""

from __future__ import annotations

from typing import Literal

from service.app.images import ImageOutcome
from service.metrics import STAGE_SECONDS
from service.pipeline.decode import decode_pixels
from service.pipeline.draw import FORMATS, encode, render

ImageFormat = Literal["jpeg", "png"]
__all__ = ["FORMATS", "ImageFormat", "overlay"]


def overlay(outcome: ImageOutcome, include: frozenset[str], image_format: ImageFormat) -> bytes:
    """The result (full-size pixels) drawn on the full-size photo, which a reduced decode is
    not: that one decodes the image again."""
    assert outcome.request is not None and outcome.result is not None
    with STAGE_SECONDS.labels("render").time():
        request = outcome.request
        photo = request.image if request.reduction == 1 else decode_pixels(outcome.encoded)
        return encode(render(photo, outcome.result, include), image_format)
