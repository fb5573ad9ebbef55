"""Between the gRPC messages and the REST shapes: both transports carry the same content."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.api.options import RequestOptions, check_boxes, parse_options
from service.config import Settings
from service.grpc import facepose_pb2 as pb

INCLUDE_NAMES = {pb.INCLUDE_MESH: "mesh", pb.INCLUDE_LANDMARKS: "landmarks",
                 pb.INCLUDE_LANDMARKS68: "landmarks68", pb.INCLUDE_IRIS: "iris",
                 pb.INCLUDE_VISIBILITY: "visibility"}
INCLUDE_VALUES = {name: value for value, name in INCLUDE_NAMES.items()}


def _optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def options_from_proto(settings: Settings, options: pb.Options) -> RequestOptions:
    """Validate like REST does; raises BadOption."""
    intrinsics = options.intrinsics
    return parse_options(
        settings,
        include=[INCLUDE_NAMES.get(value, f"unknown({value})") for value in options.include],
        max_faces=_optional(options, "max_faces"),
        min_score=_optional(options, "min_score"),
        min_presence=_optional(options, "min_presence"),
        fx=_optional(intrinsics, "fx"), fy=_optional(intrinsics, "fy"),
        cx=_optional(intrinsics, "cx"), cy=_optional(intrinsics, "cy"),
    )


def boxes_from_proto(image: pb.Image, index: int, limit: int) -> np.ndarray | None:
    """(N, 4) client boxes, or None to run the detector; raises BadOption."""
    if not image.use_boxes:
        return None
    boxes = np.array([[b.x1, b.y1, b.x2, b.y2] for b in image.boxes], np.float64)
    return check_boxes(boxes.reshape(-1, 4), index, limit)


def _flat(values: list[Any] | None) -> list[float]:
    return np.asarray(values if values is not None else [], np.float64).ravel().tolist()


def image_result_to_proto(entry: dict[str, Any]) -> pb.ImageResult:
    """A REST image entry (``schemas.ImageOut`` as a dict) as a gRPC ImageResult."""
    result = pb.ImageResult(index=entry["index"], width=entry.get("width") or 0,
                            height=entry.get("height") or 0)
    if entry.get("error"):
        result.error.code, result.error.message = entry["error"]["code"], entry["error"]["message"]
        return result
    result.camera.CopyFrom(pb.Camera(**entry["camera"]))
    for face in entry["faces"]:
        pose = face["pose"]
        message = result.faces.add(box=face["box"], score=face["score"],
                                   presence=face["presence"])
        message.pose.euler_deg.CopyFrom(pb.Euler(**pose["euler_deg"]))
        message.pose.rotation_matrix.extend(_flat(pose["rotation_matrix"]))
        message.pose.quaternion_wxyz.extend(pose["quaternion_wxyz"])
        message.pose.translation_mm.extend(pose["translation_mm"])
        message.pose.reprojection_rmse_px = pose["reprojection_rmse_px"]
        message.landmarks68.extend(_flat(face.get("landmarks68")))
        message.landmarks.extend(_flat(face.get("landmarks")))
        if face.get("mesh"):
            message.mesh_vertices_mm.extend(_flat(face["mesh"]["vertices_mm"]))
        if face.get("iris"):
            for side in ("right", "left"):
                eye = face["iris"][side]
                getattr(message.iris, side).CopyFrom(pb.Iris(
                    centre=eye["centre"], contour=_flat(eye["contour"]),
                    radius_px=eye["radius_px"]))
        if face.get("visibility"):
            message.visible.extend(face["visibility"]["vertices"])
            message.visible68.extend(face["visibility"]["landmarks68"])
    return result


def _pairs(values: Any, width: int) -> list[list[float]] | None:
    array = np.asarray(values, np.float64)
    return array.reshape(-1, width).tolist() if array.size else None


def image_result_to_dict(result: pb.ImageResult) -> dict[str, Any]:
    """A gRPC ImageResult in the REST shape (what `facepose batch` writes per image)."""
    if result.HasField("error"):
        return {"index": result.index, "width": None, "height": None, "camera": None,
                "faces": [], "error": {"code": result.error.code,
                                       "message": result.error.message}}
    camera = result.camera
    faces = []
    for face in result.faces:
        pose = face.pose
        out: dict[str, Any] = {
            "box": list(face.box), "score": face.score, "presence": face.presence,
            "pose": {
                "euler_deg": {"pitch": pose.euler_deg.pitch, "yaw": pose.euler_deg.yaw,
                              "roll": pose.euler_deg.roll},
                "rotation_matrix": _pairs(pose.rotation_matrix, 3),
                "quaternion_wxyz": list(pose.quaternion_wxyz),
                "translation_mm": list(pose.translation_mm),
                "reprojection_rmse_px": pose.reprojection_rmse_px,
            },
        }
        for name, values, width in (("landmarks68", face.landmarks68, 2),
                                    ("landmarks", face.landmarks, 2)):
            if len(values):
                out[name] = _pairs(values, width)
        if len(face.mesh_vertices_mm):
            out["mesh"] = {"vertices_mm": _pairs(face.mesh_vertices_mm, 3)}
        if face.HasField("iris"):
            out["iris"] = {side: {"centre": list(eye.centre), "contour": _pairs(eye.contour, 2),
                                  "radius_px": eye.radius_px}
                           for side, eye in (("right", face.iris.right),
                                             ("left", face.iris.left))}
        if len(face.visible):
            out["visibility"] = {"vertices": list(face.visible),
                                 "landmarks68": list(face.visible68)}
        faces.append(out)
    return {"index": result.index, "width": result.width, "height": result.height,
            "camera": {"fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy,
                       "source": camera.source},
            "faces": faces, "error": None}
