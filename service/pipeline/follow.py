"""Follow: video frames' faces fitted from their streams' last landmarks, the detector run only
where a stream needs it. The frames of many streams share each model call.

Each followed face is cropped for the next frame from its own landmarks (the rule the mesh
model was trained with), so most frames need the mesh model alone. The detector runs where the
stream says (``Follow.due``: its first frame, no face followed, or every ``detect_every`` frames
to pick up faces that came into view) and where a followed face is lost (its face-presence score
falls below ``min_presence``, or its pose failed on the last frame). A face found again where a
track was just lost keeps that track's id.

Poses come from the mesh alone: the detector's keypoints, which steady near-profile poses in
``stages.solve``, exist only on the frames where it runs, and mixing them in would make the pose
jump every ``detect_every`` frames. The stream keeps the tracks, ids and filters
(``pipeline.tracker``); this module only reads them and says what comes next (``Followed``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from service.metrics import STAGE_SECONDS
from service.pipeline.align import NUM_VERTICES, Regions, regions_from_landmarks
from service.pipeline.blendshapes import add_blendshapes
from service.pipeline.detect import NUM_KEYPOINTS, box_iou
from service.pipeline.finish import add_irises, has_pose, posed_face
from service.pipeline.records import (
    DetectReason,
    Face,
    Follow,
    Followed,
    FullRange,
    ImageRequest,
    ImageResult,
    ImageWork,
    Preset,
    Track,
)
from service.pipeline.smoothing import FaceSmoother
from service.pipeline.solve import (
    Pose,
    face_pose,
    load_canonical_face,
    reprojection_rmse,
)
from service.pipeline.stages import fit_meshes, locate, run_fit_stages
from service.runtime.base import InferenceRuntime

NO_KEYPOINTS = np.full((NUM_KEYPOINTS, 2), np.nan)
# A face whose crop, placed again from the landmarks just fitted, moved this much (centre by
# this fraction of the side, side by this ratio, angle by this many radians) is fitted again
# from the new crop: on fast motion the crop from the last frame sits off the face.
REFIT_SHIFT, REFIT_SCALE, REFIT_TURN = 0.08, 0.08, np.radians(8.0)
# Landmark boxes overlapping this much are one face: a detection of a face already followed,
# or two tracks that slid onto the same face.
SAME_FACE_IOU = 0.5
# A detector box whose centre lies in a followed face is that face's only when it also overlaps
# it this much (a detector box is tighter than the landmarks' box).
FOLLOWED_IOU = 0.2
# A face found where a track was lost in the same frame takes over its id above this overlap.
REACQUIRE_IOU = 0.3


def landmark_boxes(landmarks: np.ndarray) -> np.ndarray:
    """(N, P, 2+) image points -> (N, 4) boxes x1, y1, x2, y2 around them."""
    points = landmarks[:, :NUM_VERTICES, :2]
    return np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1).reshape(-1, 4)


def track_boxes(tracks: list[Track]) -> np.ndarray | None:
    return landmark_boxes(np.stack([t.landmarks_px for t in tracks])) if tracks else None


def crops_moved(before: Regions, after: Regions) -> np.ndarray:
    """(N,) whether each region moved past the refit thresholds."""
    shift = np.linalg.norm(after.centres - before.centres, axis=1) / before.sides
    scale = np.abs(np.log(after.sides / before.sides))
    turn = np.abs(np.angle(np.exp(1j * (after.angles - before.angles))))
    return (shift > REFIT_SHIFT) | (scale > np.log1p(REFIT_SCALE)) | (turn > REFIT_TURN)


@dataclass
class _Frame:
    """One frame's faces as far as following has got."""

    request: ImageRequest
    follow: Follow
    kept: list[Track]  # followed into this frame, by id
    lost: list[Track]  # followed and lost on this frame, then those to retry
    next_id: int

    @property
    def detect_reason(self) -> DetectReason | None:
        if self.follow.tracks and self.lost:
            return "lost"
        return self.follow.due


def follow_faces(runtime: InferenceRuntime, requests: list[ImageRequest], preset: Preset
                 ) -> list[ImageResult]:
    """Each frame's faces, followed on from its stream's (``ImageRequest.follow``), with the
    stream's next state in ``ImageResult.followed``. preset: the frames' own; a detection
    frame runs both detectors whatever it says."""
    frames = _follow(runtime, requests, preset)
    detecting = [frame for frame in frames if frame.detect_reason is not None]
    for frame, added in zip(detecting, _detect(runtime, detecting, preset), strict=True):
        frame.kept = sorted((frame.kept + added)[: frame.request.options.max_faces],
                            key=lambda t: t.track_id)
    results = [_finish(runtime, frame, preset) for frame in frames]
    asked = [face for frame, result in zip(frames, results, strict=True)
             if frame.request.options.blendshapes for face in result.faces]
    add_blendshapes(runtime, asked)
    return results


def _follow(runtime: InferenceRuntime, requests: list[ImageRequest], preset: Preset
            ) -> list[_Frame]:
    """Every frame's tracks fitted from their last landmarks, one mesh call for all frames
    (and one more for the crops that moved much)."""
    follows = [r.follow for r in requests if r.follow is not None]
    assert len(follows) == len(requests)
    images = [r.image for r in requests]
    last = [np.stack([t.landmarks_px for t in f.tracks]) if f.tracks
            else np.zeros((0, NUM_VERTICES, 3)) for f in follows]
    regions = [regions_from_landmarks(landmarks) for landmarks in last]
    landmarks, presence = fit_meshes(runtime, images, regions, preset.mesh_model)
    moved = [np.flatnonzero(crops_moved(r, regions_from_landmarks(lm))) if len(lm)
             else np.zeros(0, dtype=int) for r, lm in zip(regions, landmarks, strict=True)]
    if sum(map(len, moved)):
        refit, refit_presence = fit_meshes(
            runtime, images, [regions_from_landmarks(lm[m]) for lm, m in zip(landmarks, moved,
                                                                              strict=True)],
            preset.mesh_model)
        for lm, p, m, again, again_presence in zip(landmarks, presence, moved, refit,
                                                   refit_presence, strict=True):
            lm[m], p[m] = again, again_presence
    frames = []
    for request, follow, frame_landmarks, frame_presence in zip(requests, follows, landmarks,
                                                                presence, strict=True):
        kept, lost = [], []
        for track, face_landmarks, face_presence in zip(follow.tracks, frame_landmarks,
                                                        frame_presence, strict=True):
            if (face_presence >= request.options.min_presence
                    and np.isfinite(face_landmarks).all()):
                kept.append(replace(track, landmarks_px=face_landmarks,
                                    presence=float(face_presence)))
            else:
                lost.append(track)
        frames.append(_Frame(request, follow, _without_duplicates(kept),
                             lost + list(follow.retry), follow.next_id))
    return frames


def _without_duplicates(tracks: list[Track]) -> list[Track]:
    """Drop the younger of two tracks that slid onto the same face."""
    result: list[Track] = []
    for track in sorted(tracks, key=lambda t: t.track_id):
        box = landmark_boxes(track.landmarks_px[None])[0]
        others = track_boxes(result)
        if others is not None and box_iou(box, others).max() > SAME_FACE_IOU:
            continue
        result.append(track)
    return result


def _detect(runtime: InferenceRuntime, frames: list[_Frame], preset: Preset
            ) -> list[list[Track]]:
    """Per frame, the faces the detector finds that no kept track follows, as tracks (those
    found again keep their lost track's id and filters). One call per model for all frames."""
    if not frames:
        return []
    # The frames' preset decides how faces are first fitted; following them from frame to frame
    # is this module's own. A detection frame looks for faces coming into view, small ones
    # beside a large one included, so both detectors run whatever the preset: on one frame in
    # ``detect_every``. The search for lost faces runs the preset's own mesh model: a track's
    # landmarks keep one shape, V2's irises included, from frame to frame.
    detecting = replace(preset, full_range=FullRange.ALWAYS, search_model=None)
    located = locate(runtime, [ImageWork.unlocated(frame.request) for frame in frames],
                     detecting)
    fresh = []
    for frame, found in zip(frames, located, strict=True):
        kept_boxes = track_boxes(frame.kept)
        new = []
        for i, box in enumerate(found.boxes):
            centre = (box[:2] + box[2:]) / 2
            # Followed already: its centre inside a followed face and overlapping it. The centre
            # alone would take a smaller face in front of a larger one (a child held up) for the
            # larger.
            inside = (np.flatnonzero(np.all((kept_boxes[:, :2] <= centre)
                                            & (centre <= kept_boxes[:, 2:]), axis=1)
                                     & (box_iou(box, kept_boxes) > FOLLOWED_IOU))
                      if kept_boxes is not None else [])
            if len(inside):
                k = int(inside[0])
                frame.kept[k] = replace(frame.kept[k], score=float(found.scores[i]))
            else:
                new.append(i)
        fresh.append(np.array(new, dtype=int))
    room = [frame.request.options.max_faces - len(frame.kept) for frame in frames]
    to_fit = [k for k, (new, r) in enumerate(zip(fresh, room, strict=True)) if len(new) and r > 0]
    fitted = run_fit_stages(runtime, [located[k].take(fresh[k]) for k in to_fit], detecting)
    added: list[list[Track]] = [[] for _ in frames]
    for k, work in zip(to_fit, fitted, strict=True):
        added[k] = _new_tracks(frames[k], work, room[k])
    return added


def _new_tracks(frame: _Frame, fitted: ImageWork, room: int) -> list[Track]:
    """The faces fitted on a detection frame that are present and not followed already, at
    most ``room``: a lost track's where one was lost there, else new."""
    options, follow = frame.request.options, frame.follow
    lost_boxes = track_boxes(frame.lost)
    added: list[Track] = []
    claimed: set[int] = set()
    assert fitted.landmarks is not None and fitted.presence is not None
    for face_landmarks, face_presence, score in zip(fitted.landmarks, fitted.presence,
                                                    fitted.scores, strict=True):
        if face_presence < options.min_presence or not np.isfinite(face_landmarks).all():
            continue
        box = landmark_boxes(face_landmarks[None])[0]
        others = track_boxes(frame.kept + added)
        if others is not None and box_iou(box, others).max() > SAME_FACE_IOU:
            continue
        lost = _reacquired(box, frame.lost, lost_boxes, claimed)
        if lost is not None:
            track_id, smoother = lost.track_id, lost.smoother
        else:
            track_id, frame.next_id = frame.next_id, frame.next_id + 1
            smoother = None if follow.smoothing is None else FaceSmoother(follow.smoothing)
        added.append(Track(track_id, face_landmarks, float(face_presence), float(score),
                           smoother))
        if len(added) >= room:
            break
    return added


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


def _finish(runtime: InferenceRuntime, frame: _Frame, preset: Preset) -> ImageResult:
    """The frame's faces as its client gets them, each posed, smoothed and checked as a still
    image's; the tracks followed on; irises (blendshapes come after, for all frames at once)."""
    request, face_model = frame.request, load_canonical_face()
    camera, time_s = request.camera, frame.follow.time_s
    followed = Followed([], [], [], frame.detect_reason, frame.next_id)
    faces: list[Face] = []
    for track in frame.kept:
        with STAGE_SECONDS.labels("solve").time():
            fitted = face_pose(track.landmarks_px, NO_KEYPOINTS, track.presence, face_model,
                               camera)
        if not has_pose(fitted):
            # The landmarks have left the face; the detector picks it up again.
            followed.retry.append(track)
            continue
        landmarks, pose = track.landmarks_px, fitted
        if track.smoother is not None:
            with STAGE_SECONDS.labels("smooth").time():
                rotation, translation, landmarks = track.smoother(
                    time_s, pose.r_cam_from_model, pose.t_cam_from_model_mm, landmarks)
            pose = Pose(rotation, translation, reprojection_rmse(
                rotation, translation, landmarks[:NUM_VERTICES, :2], face_model.vertices_mm,
                camera))
        box = landmark_boxes(landmarks[face_model.landmarks68][None])[0]
        answer = posed_face(len(followed.tracks), box, track.score, landmarks, track.presence,
                            pose, preset, request, face_model, fitted=fitted)
        followed.tracks.append(track)  # followed on, shown or not (max_uncertainty_deg)
        if isinstance(answer, Face):
            faces.append(answer)
            followed.shown.append(len(followed.tracks) - 1)
    # Irises come from this frame's pixels, unsmoothed: a filter would let them slide off the
    # eyes they are measured in. Blendshapes read the smoothed landmarks, as steady as the face.
    add_irises(runtime, request, faces, [followed.tracks[k].landmarks_px for k in followed.shown])
    return ImageResult(camera, faces, quality=preset.name, followed=followed)
