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
from service.wire import BLENDSHAPE_NAMES, failed_image_entry


def error_dict(error: FaceposeError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


def camera_dict(camera: Camera) -> dict[str, Any]:
    return {"fx": camera.fx, "fy": camera.fy, "cx": camera.cx, "cy": camera.cy,
            "source": camera.source}


def face_dict(face: FaceOutput) -> dict[str, Any]:
    out: dict[str, Any] = {
        "box": face.box.tolist(),
        "box_index": face.box_index,
        "score": face.score,
        "presence": face.presence,
        "pose": {
            "euler_deg": {"pitch": face.pitch_deg, "yaw": face.yaw_deg, "roll": face.roll_deg},
            "rotation_matrix": face.r_cam_from_model.tolist(),
            "quaternion_wxyz": face.quaternion_wxyz.tolist(),
            "translation_mm": face.t_cam_from_model_mm.tolist(),
            "reprojection_rmse_px": face.reprojection_rmse_px,
            "uncertainty_deg": face.uncertainty_deg,
        },
    }
    if face.landmarks68_px is not None:
        out["landmarks68"] = face.landmarks68_px.tolist()
    if face.landmarks_px is not None:
        out["landmarks"] = face.landmarks_px.tolist()
    if face.vertices_mm is not None:
        out["mesh"] = {"vertices_mm": face.vertices_mm.tolist()}
    if face.visible is not None and face.visible68 is not None:
        out["visibility"] = {"vertices": face.visible.tolist(),
                             "landmarks68": face.visible68.tolist()}
    if face.iris is not None:
        out["iris"] = {side: {"centre": eye.centre.tolist(), "contour": eye.contour.tolist(),
                              "radius_px": eye.radius_px}
                       for side, eye in face.iris.items()}
    if face.blendshapes is not None:
        out["blendshapes"] = dict(zip(BLENDSHAPE_NAMES, face.blendshapes.tolist(), strict=True))
    return out


def image_dict(outcome: ImageOutcome, include: frozenset[str]) -> dict[str, Any]:
    if outcome.result is None:
        assert outcome.error is not None  # an image is either estimated or failed
        return failed_image_entry(outcome.index, outcome.error.code, outcome.error.message)
    return {
        "index": outcome.index,
        "width": outcome.width,
        "height": outcome.height,
        "camera": camera_dict(outcome.result.camera),
        "faces": [face_dict(face_output(face, include)) for face in outcome.result.faces],
        "quality": outcome.result.quality,
        "min_face_px": outcome.result.min_face_px,
        "dropped_boxes": [{"box_index": d.box_index, "reason": d.reason.value,
                           "message": d.message} for d in outcome.result.dropped_boxes],
        "error": None,
    }


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
