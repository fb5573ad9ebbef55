"""The API's answers as JSON, declared once for the server and its clients and holding no code
of either: an image entry, a face, a camera, a failed image, the blendshape names. The server
fills them from its rounded outputs (``http/serialize.py``), a client from the gRPC messages
(``grpc/decode.py``); ``http/schemas.py`` documents them for OpenAPI, and the tests validate
every answer against it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# kBlendshapeNames in MediaPipe's face_blendshapes_graph.cc: the blendshapes model's 52 outputs
# in order ("_neutral" is unused).
BLENDSHAPE_NAMES = (
    "_neutral",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
    "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)


def failed_image_entry(index: int, code: str, message: str) -> dict[str, Any]:
    """The entry of an image that failed (``schemas.ImageOut``): its error, nothing else."""
    return {"index": index, "width": None, "height": None, "camera": None, "faces": [],
            "quality": None, "min_face_px": None, "dropped_boxes": [],
            "error": {"code": code, "message": message}}


def camera_entry(fx: float, fy: float, cx: float, cy: float, source: str) -> dict[str, Any]:
    return {"fx": fx, "fy": fy, "cx": cx, "cy": cy, "source": source}


def face_entry(box: list[float], box_index: int | None, score: float, presence: float,
               euler_deg: tuple[float, float, float], rotation_matrix: list[list[float]],
               quaternion_wxyz: list[float], translation_mm: list[float],
               reprojection_rmse_px: float, uncertainty_deg: float, *,
               landmarks68: list[list[float]] | None = None,
               landmarks: list[list[float]] | None = None,
               vertices_mm: list[list[float]] | None = None,
               visibility: tuple[list[bool], list[bool]] | None = None,
               iris: dict[str, tuple[list[float], list[list[float]], float]] | None = None,
               blendshapes: Sequence[float] | None = None) -> dict[str, Any]:
    """One face (``schemas.FaceOut``), from plain values: the server's rounded outputs and a
    client's decoded message alike. euler_deg: pitch, yaw, roll; visibility: per vertex, per
    iBUG point; iris: per side, centre, contour, radius; the optional parts only when given."""
    pitch, yaw, roll = euler_deg
    out: dict[str, Any] = {
        "box": box, "box_index": box_index, "score": score, "presence": presence,
        "pose": {"euler_deg": {"pitch": pitch, "yaw": yaw, "roll": roll},
                 "rotation_matrix": rotation_matrix, "quaternion_wxyz": quaternion_wxyz,
                 "translation_mm": translation_mm,
                 "reprojection_rmse_px": reprojection_rmse_px,
                 "uncertainty_deg": uncertainty_deg},
    }
    if landmarks68 is not None:
        out["landmarks68"] = landmarks68
    if landmarks is not None:
        out["landmarks"] = landmarks
    if vertices_mm is not None:
        out["mesh"] = {"vertices_mm": vertices_mm}
    if visibility is not None:
        out["visibility"] = {"vertices": visibility[0], "landmarks68": visibility[1]}
    if iris is not None:
        out["iris"] = {side: {"centre": centre, "contour": contour, "radius_px": radius}
                       for side, (centre, contour, radius) in iris.items()}
    if blendshapes is not None:
        out["blendshapes"] = dict(zip(BLENDSHAPE_NAMES, blendshapes, strict=True))
    return out


def image_entry(index: int, width: int, height: int, camera: dict[str, Any],
                faces: list[dict[str, Any]], quality: str | None, min_face_px: int | None,
                dropped_boxes: Iterable[tuple[int, str, str]]) -> dict[str, Any]:
    """The entry of an image with its faces (``schemas.ImageOut``); dropped_boxes: each
    client box whose face was dropped, (box_index, reason, message)."""
    return {"index": index, "width": width, "height": height, "camera": camera,
            "faces": faces, "quality": quality, "min_face_px": min_face_px,
            "dropped_boxes": [{"box_index": i, "reason": reason, "message": message}
                              for i, reason, message in dropped_boxes],
            "error": None}
