"""Request options from query parameters, validated into pipeline types."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from service.config import Settings
from service.errors import BadOption, TooManyBoxes
from service.pipeline.pipeline import Options
from service.pipeline.solve import Camera, default_camera

INCLUDABLE = ("mesh", "landmarks", "landmarks68", "iris", "visibility")


@dataclass
class RequestOptions:
    pipeline: Options
    include: frozenset[str]
    intrinsics: tuple[float | None, float | None, float | None, float | None]
    boxes: list[np.ndarray] | None  # per image (N, 4)

    def camera_for(self, width: int, height: int, fov_deg: float) -> Camera:
        fx, fy, cx, cy = self.intrinsics
        fallback = default_camera(width, height, fov_deg)
        if fx is None and fy is None:
            if cx is None and cy is None:
                return fallback
            return Camera(fallback.fx, fallback.fy, cx or fallback.cx, cy or fallback.cy,
                          "request")
        fx = fx if fx is not None else fy
        fy = fy if fy is not None else fx
        assert fx is not None and fy is not None
        return Camera(fx, fy, fallback.cx if cx is None else cx,
                      fallback.cy if cy is None else cy, "request")


def parse_include(values: list[str]) -> frozenset[str]:
    """``include=mesh,landmarks68`` or ``include=mesh&include=landmarks68``."""
    names = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = names - set(INCLUDABLE)
    if unknown:
        raise BadOption(f"include: unknown value(s) {sorted(unknown)}; choose from {INCLUDABLE}")
    return frozenset(names)


# Pixel coordinates and focal lengths beyond this are no camera's: they only overflow the maths.
MAX_PIXEL_COORDINATE = 1e6


def _finite(name: str, value: float | None, positive: bool = False) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or abs(value) > MAX_PIXEL_COORDINATE or (
            positive and value <= 0):
        raise BadOption(f"{name} must be a{' positive' if positive else ''} number of pixels "
                        f"up to {MAX_PIXEL_COORDINATE:g}")
    return value


def parse_boxes(text: str | None, image_count: int, limit: int) -> list[np.ndarray] | None:
    """``boxes``: JSON, per image a list of [x1, y1, x2, y2] face boxes in pixels."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise BadOption("boxes must be JSON: per image a list of [x1, y1, x2, y2]") from None
    if not isinstance(value, list) or len(value) != image_count:
        raise BadOption(f"boxes must be a JSON list with one entry per image ({image_count})")
    parsed = []
    for index, image_boxes in enumerate(value):
        if not isinstance(image_boxes, list) or not all(
            isinstance(box, list) and len(box) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
            for box in image_boxes
        ):
            raise BadOption(f"boxes[{index}] must be a list of [x1, y1, x2, y2] number lists")
        parsed.append(check_boxes(np.array(image_boxes, np.float64).reshape(-1, 4), index, limit))
    return parsed


def check_boxes(boxes: np.ndarray, index: int, limit: int) -> np.ndarray:
    """(N, 4) client boxes of image ``index``, returned if valid; raises BadOption or
    TooManyBoxes."""
    if len(boxes) > limit:
        raise TooManyBoxes(f"boxes[{index}]: {len(boxes)} boxes; the limit is {limit}")
    if (not np.isfinite(boxes).all() or (np.abs(boxes) > MAX_PIXEL_COORDINATE).any()
            or (boxes[:, 2:] <= boxes[:, :2]).any()):
        raise BadOption(f"boxes[{index}]: every box needs x1 < x2 and y1 < y2, in pixels up to "
                        f"{MAX_PIXEL_COORDINATE:g}")
    return boxes


def parse_options(
    settings: Settings,
    *,
    include: list[str],
    max_faces: int | None,
    min_score: float | None,
    min_presence: float | None,
    fx: float | None,
    fy: float | None,
    cx: float | None,
    cy: float | None,
) -> RequestOptions:
    max_faces = settings.default_max_faces if max_faces is None else max_faces
    if not 1 <= max_faces <= settings.max_faces_per_image:
        raise BadOption(f"max_faces must be between 1 and {settings.max_faces_per_image}")
    thresholds = []
    for name, value, default in (("min_score", min_score, settings.default_min_score),
                                 ("min_presence", min_presence, settings.default_min_presence)):
        value = default if value is None else value
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise BadOption(f"{name} must be between 0 and 1")
        thresholds.append(value)
    return RequestOptions(
        pipeline=Options(max_faces, thresholds[0], thresholds[1],
                         iris="iris" in parse_include(include)),
        include=parse_include(include),
        intrinsics=(_finite("fx", fx, True), _finite("fy", fy, True), _finite("cx", cx),
                    _finite("cy", cy)),
        boxes=None,
    )
