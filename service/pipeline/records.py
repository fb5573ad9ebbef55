"""The typed records the pipeline's stages pass: an image with what its client asked, and the
faces found in it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.pipeline.iris import IrisPair
from service.pipeline.solve import Camera, Pose


@dataclass(frozen=True)
class PipelineOptions:
    """Which faces an image's client wants back, and whether with irises."""

    max_faces: int
    min_score: float
    min_presence: float
    iris: bool = False


@dataclass
class ImageRequest:
    """One image and what its client asked for; images of many requests may share a batch.

    The image may be a JPEG decoded at 1/``reduction`` of its size; camera and boxes are in its
    own pixels all the same, and results come back in full-size pixels.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    camera: Camera
    options: PipelineOptions
    boxes: np.ndarray | None = None  # (N, 4) client face boxes; None runs the detector
    reduction: int = 1
    redecode: Callable[[int], np.ndarray] | None = None  # the image at another reduction


@dataclass
class Face:
    box: np.ndarray  # (4,) x1, y1, x2, y2 image pixels
    score: float
    presence: float
    pose: Pose
    landmarks_px: np.ndarray  # (468, 3) x, y image pixels, z relative depth in pixels
    vertices_mm: np.ndarray  # (468, 3) camera frame
    iris: IrisPair | None = None


@dataclass
class ImageResult:
    camera: Camera
    faces: list[Face] = field(default_factory=list)
