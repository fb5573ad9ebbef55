"""Outcomes -> the JSON-ready dicts of ``schemas.FacesResponse`` and of the stream's frame
message (built directly: pydantic objects for thousands of mesh floats per face cost more than
the model). The numbers are ``app/results.py``'s, rounded there."""

from __future__ import annotations

from typing import Any

from service.app.images import ImageOutcome
from service.app.results import FaceOutput, face_output
from service.app.streams import FrameOutcome
from service.errors import FaceposeError
from service.metrics import STAGE_SECONDS
from service.pipeline.solve import Camera
from service.wire import camera_entry, face_entry, failed_image_entry, image_entry


def error_dict(error: FaceposeError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


def camera_dict(camera: Camera) -> dict[str, Any]:
    return camera_entry(camera.fx, camera.fy, camera.cx, camera.cy, camera.source)


def face_dict(face: FaceOutput) -> dict[str, Any]:
    return face_entry(
        face.box.tolist(), face.box_index, face.score, face.presence,
        (face.pitch_deg, face.yaw_deg, face.roll_deg), face.r_cam_from_model.tolist(),
        face.quaternion_wxyz.tolist(), face.t_cam_from_model_mm.tolist(),
        face.reprojection_rmse_px, face.uncertainty_deg,
        landmarks68=None if face.landmarks68_px is None else face.landmarks68_px.tolist(),
        landmarks=None if face.landmarks_px is None else face.landmarks_px.tolist(),
        vertices_mm=None if face.vertices_mm is None else face.vertices_mm.tolist(),
        visibility=(None if face.visible is None or face.visible68 is None
                    else (face.visible.tolist(), face.visible68.tolist())),
        iris=None if face.iris is None else {
            side: (eye.centre.tolist(), eye.contour.tolist(), eye.radius_px)
            for side, eye in face.iris.items()},
        blendshapes=None if face.blendshapes is None else face.blendshapes.tolist())


def image_dict(outcome: ImageOutcome, include: frozenset[str]) -> dict[str, Any]:
    if outcome.result is None:
        assert outcome.error is not None  # an image is either estimated or failed
        return failed_image_entry(outcome.index, outcome.error.code, outcome.error.message)
    result = outcome.result
    assert outcome.width is not None and outcome.height is not None
    return image_entry(
        outcome.index, outcome.width, outcome.height, camera_dict(result.camera),
        [face_dict(face_output(face, include)) for face in result.faces], result.quality,
        result.min_face_px,
        ((d.box_index, d.reason.value, d.message) for d in result.dropped_boxes))


def images_dict(outcomes: list[ImageOutcome], include: frozenset[str]) -> dict[str, Any]:
    """The /v1/faces answer."""
    with STAGE_SECONDS.labels("serialize").time():
        return {"images": [image_dict(outcome, include) for outcome in outcomes]}


def frame_dict(outcome: FrameOutcome) -> dict[str, Any]:
    """A stream's answer to one frame (``websocket.StreamFrameOut``)."""
    return {
        "type": "frame", "id": outcome.frame_id, "frame": outcome.frame,
        "timestamp_ms": outcome.timestamp_ms, "width": outcome.width, "height": outcome.height,
        "camera": None if outcome.camera is None else camera_dict(outcome.camera),
        "detected": outcome.detected,
        "faces": [{"track_id": track_id, **face_dict(face)} for track_id, face in outcome.faces],
        "error": None if outcome.error is None else error_dict(outcome.error),
    }
