"""The typed records the pipeline's stages pass: an image with what its client asked, the
faces found in it as the stages fill them in, and what comes back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

import numpy as np

from service.config import Quality
from service.pipeline.align import Regions
from service.pipeline.detect import NUM_KEYPOINTS
from service.pipeline.iris import IrisPair
from service.pipeline.mesh import MESH_V1
from service.pipeline.smoothing import FaceSmoother, SmoothingParams
from service.pipeline.solve import Camera, Pose

if TYPE_CHECKING:
    from service.runtime.base import InferenceRuntime


@dataclass(frozen=True)
class PipelineOptions:
    """Which faces an image's client wants back, with irises or not, and how hard to look."""

    max_faces: int
    min_score: float
    min_presence: float
    iris: bool = False
    blendshapes: bool = False  # the 52 blendshape scores, for the faces FaceMesh V2 fitted
    quality: Quality = Quality.BALANCED
    min_face_px: int | None = None  # smallest face searched for, full-size pixels; None: preset's
    max_uncertainty_deg: float | None = None  # faces less sure than this are dropped


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
    follow: Follow | None = None  # a video frame: its stream's faces, followed (pipeline/follow)


# Why the detector ran on a video frame: the stream's first frame, no face followed, a followed
# face lost, or its periodic look for faces coming into view.
DetectReason = Literal["first", "none_tracked", "lost", "periodic"]


@dataclass(frozen=True)
class Track:
    """A face a video stream follows, as the last frame left it."""

    track_id: int
    landmarks_px: np.ndarray  # (P, 3) as fitted, unsmoothed: where the next frame's crop goes
    presence: float
    score: float  # the detector's score when it last found the face
    smoother: FaceSmoother | None  # its poses' and landmarks' filters; None: as fitted


@dataclass(frozen=True)
class Follow:
    """A video frame's part of its stream's state: the faces to follow from the last frame's
    landmarks instead of detecting them, and whether the detector runs whatever they do. The
    stream keeps the state; the pipeline answers with the next (``Followed``)."""

    tracks: tuple[Track, ...]  # by id
    retry: tuple[Track, ...]  # whose pose failed on the last frame: found again, same id
    due: DetectReason | None  # "first", "none_tracked" or "periodic": the detector runs
    time_s: float  # the frame's time, increasing through the stream
    smoothing: SmoothingParams | None  # for faces new on this frame; None: as fitted
    next_id: int  # the id a face new on this frame takes (ids are never reused)


@dataclass
class Followed:
    """What a video frame leaves for the next: its stream's faces, and why the detector ran."""

    tracks: list[Track]  # followed on, by id
    shown: list[int]  # for each of the frame's faces, its track's index in ``tracks``
    retry: list[Track]  # whose pose failed on this frame
    detect_reason: DetectReason | None
    next_id: int



@dataclass(frozen=True)
class ImageWork:
    """One image on its way through the stages, with its N faces as far as they have got.

    Each stage returns a new record. ``regions`` are the first mesh crops (from the detector
    or the client's boxes); ``landmarks``, ``presence`` and ``poses`` exist once a stage has
    fitted or solved them.
    """

    request: ImageRequest
    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2 image pixels
    scores: np.ndarray  # (N,) detector scores, 1 for client boxes
    keypoints: np.ndarray  # (N, 6, 2) detector keypoints, image pixels; NaN where none
    regions: Regions
    landmarks: np.ndarray | None = None  # (N, P, 3) image pixels: 468 points, 478 from V2
    presence: np.ndarray | None = None  # (N,) face-presence scores of the mesh
    poses: tuple[Pose, ...] | None = None
    min_face_px: float | None = None  # the smallest face searched for, this image's pixels

    @classmethod
    def unlocated(cls, request: ImageRequest) -> ImageWork:
        return cls(request, np.zeros((0, 4)), np.zeros(0), np.zeros((0, NUM_KEYPOINTS, 2)),
                   Regions(np.zeros((0, 2)), np.zeros(0), np.zeros(0)))

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, index: np.ndarray) -> ImageWork:
        """The same image with only the faces at ``index``."""
        return replace(
            self, boxes=self.boxes[index], scores=self.scores[index],
            keypoints=self.keypoints[index], regions=self.regions.take(index),
            landmarks=None if self.landmarks is None else self.landmarks[index],
            presence=None if self.presence is None else self.presence[index],
            poses=None if self.poses is None else tuple(self.poses[i] for i in index))


class FullRange(StrEnum):
    """Where the full-range detector runs beside the short-range one."""

    ALWAYS = "always"
    # Only on images in which the short-range model found no large face: a portrait or a
    # selfie needs no search for small faces, a group photo or a far scene does.
    WHERE_NO_LARGE_FACE = "where_no_large_face"
    NEVER = "never"


class MirrorFrom(StrEnum):
    """Where a mirrored fit's first crop comes from."""

    DETECTOR = "detector"  # the mirrored image detected again: its own keypoint bias
    FIRST_CROP = "first_crop"  # the first crop, mirrored
    LANDMARKS = "landmarks"  # the fitted landmarks, mirrored: one mesh pass


Stage = Callable[["InferenceRuntime", list[ImageWork], "Preset"], list[ImageWork]]


@dataclass(frozen=True)
class Preset:
    """A pipeline: the stages that run, in order, and their parameters."""

    name: str
    stages: tuple[Stage, ...]
    mesh_model: str = MESH_V1  # the face-mesh model every fit of this preset runs
    # The lost-face search's model, where not ``mesh_model``: V1 finds more of the profiles V2
    # loses, at a quarter of V2's cost a crop. Its faces have no V2 iris points (NaN).
    search_model: str | None = None
    full_range: FullRange = FullRange.ALWAYS
    # The detector keypoints' pose used where V1 fitted the face (stages.keypoint_use; a face
    # the mesh lost takes the keypoints' pose whatever this says).
    keypoint_blend: bool = True
    mirror_from: MirrorFrom = MirrorFrom.DETECTOR
    # Faces turned further than this (or lost by the mesh) get the mirrored fit averaged in.
    mirror_above_yaw_deg: float = 25.0
    # The smallest face (full-size pixels) searched for in tiles where the whole-image pass
    # would miss it; None: the whole-image pass only.
    min_face_px: int | None = None

    def min_face_asked(self, asked: int | None) -> int | None:
        """The smallest face to search for: the client's, else this preset's."""
        return self.min_face_px if asked is None else asked

    def without(self, stage: Stage) -> Preset:
        """The same preset, name included (its uncertainty model is the preset's), without
        ``stage``."""
        return replace(self, stages=tuple(s for s in self.stages if s is not stage))


@dataclass
class Face:
    box: np.ndarray  # (4,) x1, y1, x2, y2 image pixels
    score: float
    presence: float
    pose: Pose
    landmarks_px: np.ndarray  # (P, 3) x, y image pixels, z relative depth in pixels; P: 468,
    # or 478 where FaceMesh V2 ran (its 10 iris points last)
    vertices_mm: np.ndarray  # (468, 3) camera frame
    uncertainty_deg: float  # the pose's expected mean absolute error (pipeline/uncertainty.py)
    iris: IrisPair | None = None
    blendshapes: np.ndarray | None = None  # (52,) in BLENDSHAPE_NAMES order
    box_index: int | None = None  # the client's box it was fitted in; None: the detector's


class DropReason(StrEnum):
    """Why a client's box has no face in the answer: the option that dropped it, or no pose."""

    MAX_FACES = "max_faces"
    MIN_PRESENCE = "min_presence"
    MAX_UNCERTAINTY_DEG = "max_uncertainty_deg"
    NO_POSE = "no_pose"


@dataclass(frozen=True)
class DroppedBox:
    """A client's box whose face is not returned, and why, for a person."""

    box_index: int
    reason: DropReason
    message: str


@dataclass
class ImageResult:
    camera: Camera
    faces: list[Face] = field(default_factory=list)
    quality: str | None = None  # the preset that ran
    min_face_px: int | None = None  # the smallest face searched for, full-size pixels
    dropped_boxes: list[DroppedBox] = field(default_factory=list)  # client boxes, in order
    followed: Followed | None = None  # a video frame's (``ImageRequest.follow``)
