"""gRPC answers in the REST JSON shapes, for clients: what `facepose batch` writes per image and
what ``service.client.GrpcClient`` returns. Imports the generated messages and ``service.wire``
only, never the server's code, so a client loads none of it."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.grpc import facepose_pb2 as pb
from service.wire import BLENDSHAPE_NAMES, failed_image_entry

INCLUDE_NAMES = {pb.INCLUDE_MESH: "mesh", pb.INCLUDE_LANDMARKS: "landmarks",
                 pb.INCLUDE_LANDMARKS68: "landmarks68", pb.INCLUDE_IRIS: "iris",
                 pb.INCLUDE_VISIBILITY: "visibility", pb.INCLUDE_BLENDSHAPES: "blendshapes"}
INCLUDE_VALUES = {name: value for value, name in INCLUDE_NAMES.items()}


def _pairs(values: Any, width: int) -> list[list[float]] | None:
    array = np.asarray(values, np.float64)
    return array.reshape(-1, width).tolist() if array.size else None


def image_result_to_dict(result: pb.ImageResult) -> dict[str, Any]:
    """A gRPC ImageResult in the REST shape (what `facepose batch` writes per image)."""
    if result.HasField("error"):
        return failed_image_entry(result.index, result.error.code, result.error.message)
    camera = result.camera
    faces = []
    for face in result.faces:
        pose = face.pose
        out: dict[str, Any] = {
            "box": list(face.box),
            "box_index": face.box_index if face.HasField("box_index") else None,
            "score": face.score, "presence": face.presence,
            "pose": {
                "euler_deg": {"pitch": pose.euler_deg.pitch, "yaw": pose.euler_deg.yaw,
                              "roll": pose.euler_deg.roll},
                "rotation_matrix": _pairs(pose.rotation_matrix, 3),
                "quaternion_wxyz": list(pose.quaternion_wxyz),
                "translation_mm": list(pose.translation_mm),
                "reprojection_rmse_px": pose.reprojection_rmse_px,
                "uncertainty_deg": pose.uncertainty_deg,
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
        if len(face.blendshapes):
            out["blendshapes"] = dict(zip(BLENDSHAPE_NAMES, face.blendshapes, strict=True))
        faces.append(out)
    return {"index": result.index, "width": result.width, "height": result.height,
            "camera": {"fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy,
                       "source": camera.source},
            "faces": faces, "quality": result.quality, "min_face_px": result.min_face_px,
            "dropped_boxes": [{"box_index": d.box_index, "reason": d.reason,
                               "message": d.message} for d in result.dropped_boxes],
            "error": None}
