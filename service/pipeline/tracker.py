"""Track: what one video stream keeps between its frames (its faces' tracks with their ids and
filters, the detector's schedule). Each frame is a request of the one pipeline, which follows the
tracks (``pipeline.follow``) beside other streams' frames and still images:

    request = tracker.begin(image, camera, time_s)
    (result,) = estimate_faces(runtime, [request])  # or the core's request batcher
    frame = tracker.end(result)

``track_frame`` does the three in process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.pipeline.estimate import estimate_faces
from service.pipeline.records import (
    DetectReason,
    Face,
    Follow,
    ImageRequest,
    ImageResult,
    PipelineOptions,
    Track,
)
from service.pipeline.smoothing import SmoothingParams
from service.pipeline.solve import Camera
from service.runtime.base import InferenceRuntime


@dataclass(frozen=True)
class TrackerSettings:
    # max_faces, min_score (detector), min_presence (tracks lost below), iris
    options: PipelineOptions
    detect_every: int  # frames; 1 runs the detector on every frame
    smoothing: SmoothingParams | None  # None: poses and landmarks as fitted


@dataclass
class TrackedFace:
    track_id: int
    face: Face


@dataclass
class FrameResult:
    camera: Camera
    faces: list[TrackedFace] = field(default_factory=list)
    detect_reason: DetectReason | None = None  # why the detector ran on this frame, if it did


class Tracker:
    """The tracking state of one video. One frame at a time, in order: ``begin`` a frame, run
    its request, ``end`` it with the result."""

    def __init__(self, settings: TrackerSettings) -> None:
        self.settings = settings
        self.tracks: list[Track] = []
        self.retry: list[Track] = []  # whose pose failed on the last frame
        self.frames = 0
        self._next_id = 1
        self._since_detection = 0
        self._image_shape: tuple[int, ...] | None = None

    def reset(self) -> None:
        """Forget every track (ids are never reused)."""
        self.tracks, self.retry = [], []

    def begin(self, image: np.ndarray, camera: Camera, time_s: float) -> ImageRequest:
        """The frame's request. image: (H, W, 3) uint8 RGB; time_s increasing."""
        if image.shape != self._image_shape:
            # Another frame size is another video as far as the crops are concerned.
            self.reset()
            self._image_shape = image.shape
        due: DetectReason | None = None
        if not self.tracks:
            due = "first" if self.frames == 0 else "none_tracked"
        elif self._since_detection + 1 >= self.settings.detect_every:
            due = "periodic"
        follow = Follow(tuple(self.tracks), tuple(self.retry), due, time_s,
                        self.settings.smoothing, self._next_id)
        return ImageRequest(image, camera, self.settings.options, follow=follow)

    def end(self, result: ImageResult) -> FrameResult:
        """The frame's faces with their track ids; the tracks as it leaves them."""
        followed = result.followed
        assert followed is not None, "a frame's request comes from begin"
        self.tracks, self.retry, self._next_id = followed.tracks, followed.retry, followed.next_id
        if followed.detect_reason is not None:
            self._since_detection = 0
        else:
            self._since_detection += 1
        self.frames += 1
        return FrameResult(result.camera, [
            TrackedFace(followed.tracks[k].track_id, face)
            for k, face in zip(followed.shown, result.faces, strict=True)],
            followed.detect_reason)


def track_frame(runtime: InferenceRuntime, tracker: Tracker, image: np.ndarray,
                camera: Camera, time_s: float) -> FrameResult:
    """One frame of ``tracker``'s video, tracked in this thread on its own (tests, tools)."""
    (result,) = estimate_faces(runtime, [tracker.begin(image, camera, time_s)])
    return tracker.end(result)
