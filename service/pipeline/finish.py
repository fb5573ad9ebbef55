"""Finish: the faces a client gets from the stages' records, for still images and video frames
alike: present, with a finite pose, sure enough, their meshes in mm, irises and blendshapes where
asked, in full-size pixels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from service.metrics import STAGE_SECONDS
from service.pipeline.align import NUM_VERTICES
from service.pipeline.blendshapes import add_blendshapes
from service.pipeline.iris import face_irises
from service.pipeline.records import (
    DroppedBox,
    DropReason,
    Face,
    ImageRequest,
    ImageResult,
    ImageWork,
    Preset,
)
from service.pipeline.scale import rescale_boxes, rescale_camera, rescale_landmarks
from service.pipeline.solve import CanonicalFace, Pose, load_canonical_face, mesh_in_camera_mm
from service.pipeline.uncertainty import box_side_px, uncertainty_deg
from service.runtime.base import InferenceRuntime


def to_full_size(result: ImageResult, reduction: int) -> ImageResult:
    """An image's result in full-size pixels; rotations, translations and metric meshes need
    no change."""
    if reduction == 1:
        return result
    for face in result.faces:
        face.box = rescale_boxes(face.box[None], reduction)[0]
        face.landmarks_px = rescale_landmarks(face.landmarks_px, reduction)
        face.pose = replace(face.pose,
                            reprojection_rmse_px=face.pose.reprojection_rmse_px * reduction)
    return replace(result, camera=rescale_camera(result.camera, reduction))


def has_pose(pose: Pose) -> bool:
    """Whether the fit gave a pose: a degenerate one (noise the detector took for a face, or
    landmarks that have left the face) is not finite."""
    return bool(np.isfinite(pose.r_cam_from_model).all()
                and np.isfinite(pose.t_cam_from_model_mm).all())


def posed_face(index: int, box: np.ndarray, score: float, landmarks: np.ndarray,
               presence: float, pose: Pose, preset: Preset, request: ImageRequest,
               face_model: CanonicalFace, fitted: Pose | None = None) -> Face | DroppedBox:
    """Face ``index`` of an image as a client gets it, or why it is left out. fitted: the pose
    as fitted, where ``pose`` is smoothed; its evidence says how sure it is."""
    options = request.options
    if presence < options.min_presence:
        return DroppedBox(index, DropReason.MIN_PRESENCE,
                          f"presence {presence:.3f} is under min_presence "
                          f"{options.min_presence:g}: the face mesh sees no face there")
    if not np.isfinite(landmarks[NUM_VERTICES:]).all():
        landmarks = landmarks[:NUM_VERTICES]  # V1 refound it: no V2 irises
    uncertainty = uncertainty_deg(fitted or pose, presence, box_side_px(box), preset.name,
                                  request.reduction)
    limit = options.max_uncertainty_deg
    if limit is not None and not uncertainty <= limit:
        return DroppedBox(index, DropReason.MAX_UNCERTAINTY_DEG,
                          f"uncertainty {uncertainty:.2f} deg is over max_uncertainty_deg "
                          f"{limit:g}")
    vertices = mesh_in_camera_mm(landmarks, pose, face_model.vertices_mm, request.camera)
    if not (has_pose(pose) and all(np.isfinite(a).all() for a in (box, landmarks, vertices))):
        return DroppedBox(index, DropReason.NO_POSE,
                          "the face mesh fitted in this box gives no finite pose")
    return Face(box, score, presence, pose, landmarks, vertices, uncertainty,
                box_index=index if request.boxes is not None else None)


def finish(runtime: InferenceRuntime, work: ImageWork, preset: Preset) -> ImageResult:
    """The faces a client gets: present, with a pose, their meshes in mm, irises if asked. A
    client's box whose face is left out gets a ``DroppedBox`` saying why."""
    request, face_model = work.request, load_canonical_face()
    options = request.options
    result = ImageResult(request.camera, quality=preset.name,
                         min_face_px=None if work.min_face_px is None
                         else round(work.min_face_px * request.reduction))
    given = request.boxes is not None
    for index, (box, score, face_landmarks, face_presence, pose) in enumerate(zip(
            work.boxes, work.scores, work.landmarks, work.presence, work.poses, strict=True)):
        answer = posed_face(index, box, float(score), face_landmarks, float(face_presence),
                            pose, preset, request, face_model)
        if isinstance(answer, Face):
            result.faces.append(answer)
        elif given:
            result.dropped_boxes.append(answer)
    if given:
        assert request.boxes is not None
        result.dropped_boxes.extend(
            DroppedBox(index, DropReason.MAX_FACES,
                       f"only max_faces={options.max_faces} boxes an image are fitted")
            for index in range(len(work), len(request.boxes)))
    add_irises(runtime, request, result.faces)
    if options.blendshapes:
        add_blendshapes(runtime, result.faces)
    return to_full_size(result, request.reduction)


def add_irises(runtime: InferenceRuntime, request: ImageRequest, faces: list[Face],
               eye_landmarks: list[np.ndarray] | None = None) -> None:
    """Each face's irises where its client asked. eye_landmarks: where the eye crops go, per
    face, if not its own landmarks (a video's, smoothed, would lag the eyes)."""
    if request.options.iris and faces:
        with STAGE_SECONDS.labels("iris").time():
            pairs = face_irises(runtime, request.image, eye_landmarks
                                or [f.landmarks_px for f in faces])
        for face, pair in zip(faces, pairs, strict=True):
            face.iris = pair
