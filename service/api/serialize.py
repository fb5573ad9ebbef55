"""Pipeline results -> the JSON-ready dicts of ``schemas.FacesResponse`` (built directly:
pydantic objects for thousands of mesh floats per face cost more than the model)."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.pipeline.pipeline import Face, ImageResult
from service.pipeline.solve import euler_pitch_yaw_roll_deg, load_canonical_face, quaternion_wxyz
from service.pipeline.visibility import visible_vertices


def _rounded(array: np.ndarray, decimals: int) -> list[Any]:
    return np.round(array, decimals).tolist()


def face_dict(face: Face, include: frozenset[str]) -> dict[str, Any]:
    pose = face.pose
    pitch, yaw, roll = euler_pitch_yaw_roll_deg(pose.r_cam_from_model)
    out: dict[str, Any] = {
        "box": _rounded(face.box, 2),
        "score": round(face.score, 5),
        "presence": round(face.presence, 5),
        "pose": {
            "euler_deg": {"pitch": round(pitch, 4), "yaw": round(yaw, 4), "roll": round(roll, 4)},
            "rotation_matrix": _rounded(pose.r_cam_from_model, 7),
            "quaternion_wxyz": _rounded(quaternion_wxyz(pose.r_cam_from_model), 7),
            "translation_mm": _rounded(pose.t_cam_from_model_mm, 3),
            "reprojection_rmse_px": round(pose.reprojection_rmse_px, 4),
        },
    }
    if "landmarks68" in include:
        out["landmarks68"] = _rounded(face.landmarks_px[load_canonical_face().landmarks68, :2], 2)
    if "landmarks" in include:
        out["landmarks"] = _rounded(face.landmarks_px[:, :2], 2)
    if "mesh" in include:
        out["mesh"] = {"vertices_mm": _rounded(face.vertices_mm, 2)}
    if "visibility" in include:
        face_model = load_canonical_face()
        visible = visible_vertices(face.vertices_mm, face_model.triangles)
        out["visibility"] = {"vertices": visible.tolist(),
                             "landmarks68": visible[face_model.landmarks68].tolist()}
    if "iris" in include and face.iris is not None:
        out["iris"] = {
            side: {
                "centre": _rounded(eye.centre, 2),
                "contour": _rounded(eye.contour, 2),
                "radius_px": round(float(eye.radius_px), 3),
            }
            for side, eye in (("right", face.iris.right), ("left", face.iris.left))
        }
    return out


def image_dict(index: int, width: int, height: int, result: ImageResult,
               include: frozenset[str]) -> dict[str, Any]:
    camera = result.camera
    return {
        "index": index,
        "width": width,
        "height": height,
        "camera": {"fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy,
                   "source": camera.source},
        "faces": [face_dict(face, include) for face in result.faces],
        "error": None,
    }


def error_dict(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}
