"""A face's answer as every transport gives it: the pipeline's result with the optional outputs
a client asked for, rounded by one rule, so that JSON and protobuf carry the same numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.app.options import Include
from service.pipeline.records import Face
from service.pipeline.solve import euler_pitch_yaw_roll_deg, load_canonical_face, quaternion_wxyz
from service.pipeline.visibility import visible_vertices

# Decimal places kept: pixels to 1/100, rotations to 1e-7, millimetres to 1/1000 (poses) and
# 1/100 (meshes), angles to 1e-4 degree, scores to 1e-5.
PIXEL_DECIMALS, ROTATION_DECIMALS, TRANSLATION_DECIMALS, MESH_DECIMALS = 2, 7, 3, 2
ANGLE_DECIMALS, SCORE_DECIMALS, RMSE_DECIMALS, RADIUS_DECIMALS = 4, 5, 4, 3
UNCERTAINTY_DECIMALS = 2


@dataclass(frozen=True)
class IrisOutput:
    centre: np.ndarray  # (2,) image pixels
    contour: np.ndarray  # (4, 2) image pixels
    radius_px: float


@dataclass(frozen=True)
class FaceOutput:
    """One face, rounded; the optional parts are None unless included."""

    box: np.ndarray  # (4,) x1, y1, x2, y2 image pixels
    score: float
    presence: float
    pitch_deg: float
    yaw_deg: float
    roll_deg: float
    r_cam_from_model: np.ndarray  # (3, 3)
    quaternion_wxyz: np.ndarray  # (4,)
    t_cam_from_model_mm: np.ndarray  # (3,)
    reprojection_rmse_px: float
    uncertainty_deg: float
    landmarks68_px: np.ndarray | None = None  # (68, 2)
    landmarks_px: np.ndarray | None = None  # (P, 2): 468, or 478 with V2's irises
    vertices_mm: np.ndarray | None = None  # (468, 3) camera frame
    visible: np.ndarray | None = None  # (468,) bool
    visible68: np.ndarray | None = None  # (68,) bool
    iris: dict[str, IrisOutput] | None = None  # "right", "left": the subject's eyes
    blendshapes: np.ndarray | None = None  # (52,) scores in BLENDSHAPE_NAMES order
    box_index: int | None = None  # the client's box it came from; None: the detector's


def face_output(face: Face, include: frozenset[str]) -> FaceOutput:
    pose = face.pose
    pitch, yaw, roll = euler_pitch_yaw_roll_deg(pose.r_cam_from_model)
    face_model = load_canonical_face()
    visible = (visible_vertices(face.vertices_mm, face_model.triangles)
               if Include.VISIBILITY in include else None)
    # Irises and blendshapes are there only where the request asked the pipeline for them
    # (``RequestOptions.pipeline``): decided once, not again here.
    iris = None
    if face.iris is not None:
        iris = {side: IrisOutput(np.round(eye.centre, PIXEL_DECIMALS),
                                 np.round(eye.contour, PIXEL_DECIMALS),
                                 round(float(eye.radius_px), RADIUS_DECIMALS))
                for side, eye in (("right", face.iris.right), ("left", face.iris.left))}
    return FaceOutput(
        box=np.round(face.box, PIXEL_DECIMALS),
        score=round(face.score, SCORE_DECIMALS),
        presence=round(face.presence, SCORE_DECIMALS),
        pitch_deg=round(pitch, ANGLE_DECIMALS),
        yaw_deg=round(yaw, ANGLE_DECIMALS),
        roll_deg=round(roll, ANGLE_DECIMALS),
        r_cam_from_model=np.round(pose.r_cam_from_model, ROTATION_DECIMALS),
        quaternion_wxyz=np.round(quaternion_wxyz(pose.r_cam_from_model), ROTATION_DECIMALS),
        t_cam_from_model_mm=np.round(pose.t_cam_from_model_mm, TRANSLATION_DECIMALS),
        reprojection_rmse_px=round(pose.reprojection_rmse_px, RMSE_DECIMALS),
        uncertainty_deg=round(face.uncertainty_deg, UNCERTAINTY_DECIMALS),
        landmarks68_px=(np.round(face.landmarks_px[face_model.landmarks68, :2], PIXEL_DECIMALS)
                        if Include.LANDMARKS68 in include else None),
        landmarks_px=(np.round(face.landmarks_px[:, :2], PIXEL_DECIMALS)
                      if Include.LANDMARKS in include else None),
        vertices_mm=(np.round(face.vertices_mm, MESH_DECIMALS)
                     if Include.MESH in include else None),
        visible=visible,
        visible68=None if visible is None else visible[face_model.landmarks68],
        iris=iris,
        blendshapes=(None if face.blendshapes is None
                     else np.round(face.blendshapes, SCORE_DECIMALS)),
        box_index=face.box_index,
    )
