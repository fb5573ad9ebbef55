"""Track: faces followed through the frames of one video, with a stable id each.

Each tracked face is cropped for the next frame from its own landmarks (the rule the mesh
model was trained with), so most frames need the mesh model alone. The detector runs on the
first frame, on any frame where a track is lost (its face-presence score falls below
``min_presence``) or none is left, and every ``detect_every`` frames to pick up faces that
came into view. A face found again where a track was just lost keeps that track's id.

Poses come from the mesh alone: the detector's keypoints, which steady near-profile poses in
``stages.solve``, exist only on the frames where it runs, and mixing them in would make
the pose jump every ``detect_every`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from service.metrics import STAGE_SECONDS
from service.pipeline.align import NUM_VERTICES, Regions, regions_from_landmarks
from service.pipeline.blendshapes import add_blendshapes
from service.pipeline.detect import NUM_KEYPOINTS, box_iou
from service.pipeline.iris import face_irises
from service.pipeline.presets import PRESETS
from service.pipeline.records import (
    Face,
    FullRange,
    ImageRequest,
    ImageWork,
    PipelineOptions,
)
from service.pipeline.smoothing import FaceSmoother, SmoothingParams
from service.pipeline.solve import (
    Camera,
    Pose,
    face_pose,
    load_canonical_face,
    mesh_in_camera_mm,
    reprojection_rmse,
)
from service.pipeline.stages import fit_meshes, locate, run_fit_stages
from service.pipeline.uncertainty import box_side_px, uncertainty_deg
from service.runtime.base import InferenceRuntime

NO_KEYPOINTS = np.full((NUM_KEYPOINTS, 2), np.nan)
# A face whose crop, placed again from the landmarks just fitted, moved this much (centre by
# this fraction of the side, side by this ratio, angle by this many radians) is fitted again
# from the new crop: on fast motion the crop from the last frame sits off the face.
REFIT_SHIFT, REFIT_SCALE, REFIT_TURN = 0.08, 0.08, np.radians(8.0)
# Landmark boxes overlapping this much are one face: a detection of a face already tracked,
# or two tracks that slid onto the same face.
SAME_FACE_IOU = 0.5
# A detector box whose centre lies in a tracked face is that face's only when it also overlaps
# it this much (a detector box is tighter than the landmarks' box).
FOLLOWED_IOU = 0.2
# A face found where a track was lost in the same frame takes over its id above this overlap.
REACQUIRE_IOU = 0.3

DetectReason = str  # "first", "lost", "none_tracked", "periodic"


@dataclass(frozen=True)
class TrackerSettings:
    # max_faces, min_score (detector), min_presence (tracks lost below), iris
    options: PipelineOptions
    detect_every: int  # frames; 1 runs the detector on every frame
    smoothing: SmoothingParams | None  # None: poses and landmarks as fitted


@dataclass
class Track:
    track_id: int
    landmarks_px: np.ndarray  # (468, 3) as fitted on the last frame: the next frame's crop
    presence: float
    score: float  # detector score when the face was last detected
    smoother: FaceSmoother | None


@dataclass
class TrackedFace:
    track_id: int
    face: Face


@dataclass
class FrameResult:
    camera: Camera
    faces: list[TrackedFace] = field(default_factory=list)
    detect_reason: DetectReason | None = None  # why the detector ran on this frame, if it did


def landmark_boxes(landmarks: np.ndarray) -> np.ndarray:
    """(N, P, 2+) image points -> (N, 4) boxes x1, y1, x2, y2 around them."""
    points = landmarks[:, :NUM_VERTICES, :2]
    return np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1).reshape(-1, 4)


def crops_moved(before: Regions, after: Regions) -> np.ndarray:
    """(N,) whether each region moved past the refit thresholds."""
    shift = np.linalg.norm(after.centres - before.centres, axis=1) / before.sides
    scale = np.abs(np.log(after.sides / before.sides))
    turn = np.abs(np.angle(np.exp(1j * (after.angles - before.angles))))
    return (shift > REFIT_SHIFT) | (scale > np.log1p(REFIT_SCALE)) | (turn > REFIT_TURN)


class Tracker:
    """The tracking state of one video. Not thread-safe: one frame at a time, in order."""

    def __init__(self, runtime: InferenceRuntime, settings: TrackerSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.tracks: list[Track] = []
        self.frames = 0
        self._next_id = 1
        self._since_detection = 0
        self._image_shape: tuple[int, ...] | None = None
        self._dropped: list[Track] = []  # tracks whose pose failed on the last frame

    def reset(self) -> None:
        """Forget every track (ids are never reused)."""
        self.tracks = []
        self._dropped = []

    def step(self, image: np.ndarray, camera: Camera, time_s: float) -> FrameResult:
        """Track the faces into this frame. image: (H, W, 3) uint8 RGB; time_s increasing."""
        if image.shape != self._image_shape:
            # Another frame size is another video as far as the crops are concerned.
            self.reset()
            self._image_shape = image.shape
        options = self.settings.options
        kept, lost = self._follow(image)
        # Tracks whose pose failed last frame: the detector may find them again, same id.
        lost, self._dropped = lost + self._dropped, []
        reason: DetectReason | None = None
        if not self.tracks:
            reason = "first" if self.frames == 0 else "none_tracked"
        elif lost:
            reason = "lost"
        elif self._since_detection + 1 >= self.settings.detect_every:
            reason = "periodic"
        if reason is not None:
            kept += self._detect(image, camera, kept, lost)
            self._since_detection = 0
        else:
            self._since_detection += 1
        self.tracks = sorted(kept[: options.max_faces], key=lambda t: t.track_id)
        self.frames += 1
        return FrameResult(camera, self._faces(image, camera, time_s), reason)

    def _follow(self, image: np.ndarray) -> tuple[list[Track], list[Track]]:
        """Fit every track from its last landmarks: (still present, lost)."""
        if not self.tracks:
            return [], []
        regions = regions_from_landmarks(np.stack([t.landmarks_px for t in self.tracks]))
        model = PRESETS[self.settings.options.quality].mesh_model
        (landmarks,), (presence,) = fit_meshes(self.runtime, [image], [regions], model)
        moved = np.flatnonzero(crops_moved(regions, regions_from_landmarks(landmarks)))
        if len(moved):
            (refit,), (refit_presence,) = fit_meshes(
                self.runtime, [image], [regions_from_landmarks(landmarks[moved])], model)
            landmarks[moved], presence[moved] = refit, refit_presence
        kept, lost = [], []
        for track, face_landmarks, face_presence in zip(self.tracks, landmarks, presence,
                                                        strict=True):
            present = (face_presence >= self.settings.options.min_presence
                       and np.isfinite(face_landmarks).all())
            if present:
                track.landmarks_px, track.presence = face_landmarks, float(face_presence)
            (kept if present else lost).append(track)
        return self._without_duplicates(kept), lost

    @staticmethod
    def _without_duplicates(tracks: list[Track]) -> list[Track]:
        """Drop the younger of two tracks that slid onto the same face."""
        result: list[Track] = []
        for track in sorted(tracks, key=lambda t: t.track_id):
            box = landmark_boxes(track.landmarks_px[None])[0]
            if result and box_iou(box, landmark_boxes(
                    np.stack([t.landmarks_px for t in result]))).max() > SAME_FACE_IOU:
                continue
            result.append(track)
        return result

    def _detect(self, image: np.ndarray, camera: Camera, kept: list[Track],
                lost: list[Track]) -> list[Track]:
        """New tracks for the faces the detector finds that no kept track follows."""
        options = self.settings.options
        # The options' preset decides how faces are first fitted; following them from frame
        # to frame is the tracker's own. A detection frame looks for faces coming into view,
        # small ones beside a large one included, so both detectors run whatever the preset:
        # on one frame in ``detect_every``.
        # The search for lost faces runs the preset's own mesh model: a track's landmarks keep
        # one shape, V2's irises included, from frame to frame.
        preset = replace(PRESETS[options.quality], full_range=FullRange.ALWAYS,
                         search_model=None)
        (located,) = locate(self.runtime, [ImageWork.unlocated(
            ImageRequest(image, camera, options))], preset)
        boxes, scores = located.boxes, located.scores
        kept_boxes = landmark_boxes(np.stack([t.landmarks_px for t in kept])) if kept else None
        fresh = []
        for i, box in enumerate(boxes):
            centre = (box[:2] + box[2:]) / 2
            # Followed already: its centre inside a tracked face and overlapping it. The centre
            # alone would take a smaller face in front of a larger one (a child held up) for
            # the larger.
            inside = (np.flatnonzero(np.all((kept_boxes[:, :2] <= centre)
                                            & (centre <= kept_boxes[:, 2:]), axis=1)
                                     & (box_iou(box, kept_boxes) > FOLLOWED_IOU))
                      if kept_boxes is not None else [])
            if len(inside):
                kept[int(inside[0])].score = float(scores[i])
            else:
                fresh.append(i)
        room = options.max_faces - len(kept)
        if not fresh or room <= 0:
            return []
        (fitted,) = run_fit_stages(self.runtime, [located.take(np.array(fresh))], preset)
        landmarks, presence = fitted.landmarks, fitted.presence
        lost_boxes = landmark_boxes(np.stack([t.landmarks_px for t in lost])) if lost else None
        added: list[Track] = []
        claimed: set[int] = set()
        for face_landmarks, face_presence, score in zip(landmarks, presence, fitted.scores,
                                                        strict=True):
            if face_presence < options.min_presence or not np.isfinite(face_landmarks).all():
                continue
            box = landmark_boxes(face_landmarks[None])[0]
            others = [t.landmarks_px for t in kept + added]
            if others and box_iou(box, landmark_boxes(np.stack(others))).max() > SAME_FACE_IOU:
                continue
            track = self._reacquired(box, lost, lost_boxes, claimed)
            if track is None:
                track = Track(self._next_id, face_landmarks, float(face_presence), float(score),
                              None if self.settings.smoothing is None
                              else FaceSmoother(self.settings.smoothing))
                self._next_id += 1
            else:
                track.landmarks_px, track.presence = face_landmarks, float(face_presence)
                track.score = float(score)
            added.append(track)
            if len(added) >= room:
                break
        return added

    @staticmethod
    def _reacquired(box: np.ndarray, lost: list[Track], lost_boxes: np.ndarray | None,
                    claimed: set[int]) -> Track | None:
        """The lost track whose face this box is, if any and not ``claimed`` already."""
        if lost_boxes is None:
            return None
        overlap = box_iou(box, lost_boxes)
        overlap[list(claimed)] = -1.0
        best = int(np.argmax(overlap))
        if overlap[best] <= REACQUIRE_IOU:
            return None
        claimed.add(best)
        return lost[best]

    def _faces(self, image: np.ndarray, camera: Camera, time_s: float) -> list[TrackedFace]:
        face_model = load_canonical_face()
        options = self.settings.options
        faces: list[TrackedFace] = []
        alive: list[Track] = []
        shown: list[Track] = []
        for track in self.tracks:
            with STAGE_SECONDS.labels("solve").time():
                pose = face_pose(track.landmarks_px, NO_KEYPOINTS, track.presence, face_model,
                                 camera)
            if not (np.isfinite(pose.r_cam_from_model).all()
                    and np.isfinite(pose.t_cam_from_model_mm).all()):
                # No pose: the landmarks have left the face; the detector picks it up again.
                self._dropped.append(track)
                continue
            landmarks, fitted = track.landmarks_px, pose
            if track.smoother is not None:
                with STAGE_SECONDS.labels("smooth").time():
                    rotation, translation, landmarks = track.smoother(
                        time_s, pose.r_cam_from_model, pose.t_cam_from_model_mm, landmarks)
                pose = Pose(rotation, translation, reprojection_rmse(
                    rotation, translation, landmarks[:NUM_VERTICES, :2], face_model.vertices_mm,
                    camera))
            vertices = mesh_in_camera_mm(landmarks, pose, face_model.vertices_mm, camera)
            box = landmark_boxes(landmarks[face_model.landmarks68][None])[0]
            # From the fit before smoothing, which has its evidence; the detector's keypoints
            # are not followed from frame to frame, so the model without them applies.
            uncertainty = uncertainty_deg(fitted, track.presence, box_side_px(box),
                                          options.quality.value)
            alive.append(track)
            if options.max_uncertainty_deg is not None and not (
                    uncertainty <= options.max_uncertainty_deg):
                continue  # still followed, not shown
            faces.append(TrackedFace(track.track_id, Face(box, track.score, track.presence,
                                                          pose, landmarks, vertices,
                                                          uncertainty)))
            shown.append(track)
        self.tracks = alive
        if options.iris and faces:
            # Irises come from this frame's pixels, unsmoothed: a filter would let them slide
            # off the eyes they are measured in.
            pairs = face_irises(self.runtime, image, [t.landmarks_px for t in shown])
            for tracked, pair in zip(faces, pairs, strict=True):
                tracked.face.iris = pair
        if options.blendshapes:
            # From the smoothed landmarks: the scores are as steady as the face they describe.
            add_blendshapes(self.runtime, [tracked.face for tracked in faces])
        return faces
