"""Coordinates between one image decoded at different scales (a JPEG decoded at 1/r).

Pixel centres line up: pixel x at reduction r covers full-size pixels around (x + 0.5) r - 0.5.
A ``factor`` below is old reduction / new reduction: 2 takes a 1/4 image's points to 1/2.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from service.pipeline.align import Regions
from service.pipeline.solve import Camera


def rescale_xy(points: np.ndarray, factor: float) -> np.ndarray:
    """(..., 2) x, y pixels -> the same points in the image ``factor`` times larger."""
    return (points + 0.5) * factor - 0.5


def rescale_boxes(boxes: np.ndarray, factor: float) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 -> the same boxes in the image ``factor`` times larger."""
    return rescale_xy(boxes.reshape(-1, 2, 2), factor).reshape(-1, 4)


def rescale_landmarks(landmarks: np.ndarray, factor: float) -> np.ndarray:
    """(..., 3) x, y pixels and z relative depth in pixels: all three scale."""
    return np.concatenate([rescale_xy(landmarks[..., :2], factor),
                           landmarks[..., 2:] * factor], axis=-1)


def rescale_regions(regions: Regions, factor: float) -> Regions:
    return Regions(rescale_xy(regions.centres, factor), regions.sides * factor, regions.angles)


def rescale_camera(camera: Camera, factor: float) -> Camera:
    """The same camera for the image ``factor`` times larger: one ray, one scaled pixel."""
    return replace(camera, fx=camera.fx * factor, fy=camera.fy * factor,
                   cx=(camera.cx + 0.5) * factor - 0.5, cy=(camera.cy + 0.5) * factor - 0.5)
