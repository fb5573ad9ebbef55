"""gRPC answers in the REST JSON shapes, for clients: what `facepose batch` writes per image and
what ``service.clients.GrpcClient`` returns. Imports the generated messages and ``service.wire``
only, never the server's code, so a client loads none of it."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.grpc import facepose_pb2 as pb
from service.wire import camera_entry, face_entry, failed_image_entry, image_entry

# Read from the proto, so that a new option or include value is declared there and in
# ``app/options.py`` only: INCLUDE_MESH is "mesh", as REST's include names it.
INCLUDE_NAMES = {value: name.removeprefix("INCLUDE_").lower()
                 for name, value in pb.Include.items() if value != pb.INCLUDE_UNSPECIFIED}
INCLUDE_VALUES = {name: value for value, name in INCLUDE_NAMES.items()}
# The options that are one scalar each, by their REST names: Options' own, then the
# intrinsics'.
SCALAR_OPTIONS = tuple(field.name for field in pb.Options.DESCRIPTOR.fields
                       if field.name not in ("include", "intrinsics"))
INTRINSICS_OPTIONS = tuple(field.name for field in pb.Intrinsics.DESCRIPTOR.fields)
OPTION_NAMES = SCALAR_OPTIONS + INTRINSICS_OPTIONS


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
        faces.append(face_entry(
            list(face.box), face.box_index if face.HasField("box_index") else None,
            face.score, face.presence,
            (pose.euler_deg.pitch, pose.euler_deg.yaw, pose.euler_deg.roll),
            _pairs(pose.rotation_matrix, 3) or [], list(pose.quaternion_wxyz),
            list(pose.translation_mm), pose.reprojection_rmse_px, pose.uncertainty_deg,
            landmarks68=_pairs(face.landmarks68, 2), landmarks=_pairs(face.landmarks, 2),
            vertices_mm=_pairs(face.mesh_vertices_mm, 3),
            visibility=((list(face.visible), list(face.visible68)) if len(face.visible)
                        else None),
            iris={side: (list(eye.centre), _pairs(eye.contour, 2) or [], eye.radius_px)
                  for side, eye in (("right", face.iris.right), ("left", face.iris.left))}
            if face.HasField("iris") else None,
            blendshapes=list(face.blendshapes) if len(face.blendshapes) else None))
    return image_entry(
        result.index, result.width, result.height,
        camera_entry(camera.fx, camera.fy, camera.cx, camera.cy, camera.source), faces,
        result.quality, result.min_face_px,
        ((d.box_index, d.reason, d.message) for d in result.dropped_boxes))
