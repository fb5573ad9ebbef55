"""The gRPC messages to and from the core's types: options, boxes and a stream's config in;
image outcomes and stream frames out, with the numbers ``app/results.py`` rounded, as JSON has
them. The clients' way back to the REST shape is ``grpc/decode.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.app.images import ImageOutcome
from service.app.options import RequestOptions, check_boxes, validate_options
from service.app.results import FaceOutput, face_output
from service.app.streams import FrameOutcome, StreamConfig
from service.errors import FaceposeError
from service.grpc import facepose_pb2 as pb
from service.grpc.decode import INCLUDE_NAMES, INTRINSICS_OPTIONS, SCALAR_OPTIONS
from service.pipeline.solve import Camera

ONE_EURO_FIELDS = ("min_cutoff_hz", "beta", "d_cutoff_hz")


def _set_fields(message: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(message, name) for name in names if message.HasField(name)}


def _option_fields(options: pb.Options) -> dict[str, Any]:
    """The fields a client set; an Include value this server does not know stays unknown, and
    is refused as REST refuses an unknown include name."""
    return {
        "include": [INCLUDE_NAMES.get(value, f"unknown({value})") for value in options.include],
        **_set_fields(options, SCALAR_OPTIONS),
        **_set_fields(options.intrinsics, INTRINSICS_OPTIONS),
    }


def options_from_proto(model: type[RequestOptions], options: pb.Options) -> RequestOptions:
    """Validated by the same model as REST's query; raises BadOption."""
    return validate_options(model, _option_fields(options))


def config_from_proto(model: type[StreamConfig], config: pb.TrackConfig) -> StreamConfig:
    """A Track config validated by the stream's config model; raises BadOption."""
    smoothing = config.smoothing
    fields = {
        **_option_fields(config.options),
        **_set_fields(config, ("detect_every", "fps")),
        "smoothing": {"enabled": not smoothing.disabled, **{
            part: _set_fields(getattr(smoothing, part), ONE_EURO_FIELDS)
            for part in ("rotation", "translation", "landmarks")}},
    }
    validated = validate_options(model, fields, prefix="config: ")
    assert isinstance(validated, StreamConfig)
    return validated


def boxes_from_proto(image: pb.Image, index: int, limit: int) -> np.ndarray | None:
    """(N, 4) client boxes, or None to run the detector; raises BadOption."""
    if not image.use_boxes:
        return None
    boxes = np.array([[b.x1, b.y1, b.x2, b.y2] for b in image.boxes], np.float64)
    return check_boxes(boxes.reshape(-1, 4), f"images[{index}].boxes", limit)


def _flat(array: np.ndarray) -> list[Any]:
    return array.ravel().tolist()


def error_message(error: FaceposeError) -> pb.Error:
    return pb.Error(code=error.code, message=error.message)


def camera_message(camera: Camera) -> pb.Camera:
    return pb.Camera(fx=camera.fx, fy=camera.fy, cx=camera.cx, cy=camera.cy,
                     source=camera.source)


def fill_face(message: pb.Face, face: FaceOutput) -> None:
    message.box.extend(_flat(face.box))
    if face.box_index is not None:
        message.box_index = face.box_index
    message.score, message.presence = face.score, face.presence
    pose = message.pose
    pose.euler_deg.CopyFrom(pb.Euler(pitch=face.pitch_deg, yaw=face.yaw_deg, roll=face.roll_deg))
    pose.rotation_matrix.extend(_flat(face.r_cam_from_model))
    pose.quaternion_wxyz.extend(_flat(face.quaternion_wxyz))
    pose.translation_mm.extend(_flat(face.t_cam_from_model_mm))
    pose.reprojection_rmse_px = face.reprojection_rmse_px
    pose.uncertainty_deg = face.uncertainty_deg
    if face.landmarks68_px is not None:
        message.landmarks68.extend(_flat(face.landmarks68_px))
    if face.landmarks_px is not None:
        message.landmarks.extend(_flat(face.landmarks_px))
    if face.vertices_mm is not None:
        message.mesh_vertices_mm.extend(_flat(face.vertices_mm))
    if face.iris is not None:
        for side, eye in face.iris.items():
            getattr(message.iris, side).CopyFrom(pb.Iris(
                centre=_flat(eye.centre), contour=_flat(eye.contour), radius_px=eye.radius_px))
    if face.visible is not None and face.visible68 is not None:
        message.visible.extend(face.visible.tolist())
        message.visible68.extend(face.visible68.tolist())
    if face.blendshapes is not None:
        message.blendshapes.extend(face.blendshapes.tolist())


def image_message(outcome: ImageOutcome, include: frozenset[str]) -> pb.ImageResult:
    message = pb.ImageResult(index=outcome.index, width=outcome.width or 0,
                             height=outcome.height or 0)
    if outcome.result is None:
        assert outcome.error is not None  # an image is either estimated or failed
        message.error.CopyFrom(error_message(outcome.error))
        return message
    message.camera.CopyFrom(camera_message(outcome.result.camera))
    message.quality = outcome.result.quality or ""
    message.min_face_px = outcome.result.min_face_px or 0
    for face in outcome.result.faces:
        fill_face(message.faces.add(), face_output(face, include))
    message.dropped_boxes.extend(
        pb.DroppedBox(box_index=d.box_index, reason=d.reason.value, message=d.message)
        for d in outcome.result.dropped_boxes)
    return message


def track_message(outcome: FrameOutcome) -> pb.TrackResult:
    """A stream frame's answer, its faces carrying their track ids."""
    result = pb.ImageResult(index=outcome.frame, width=outcome.width or 0,
                            height=outcome.height or 0)
    if outcome.error is not None:
        result.error.CopyFrom(error_message(outcome.error))
    else:
        if outcome.camera is not None:
            result.camera.CopyFrom(camera_message(outcome.camera))
        for track_id, face in outcome.faces:
            message = result.faces.add(track_id=track_id)
            fill_face(message, face)
    track = pb.TrackResult(id="" if outcome.frame_id is None else str(outcome.frame_id),
                           frame=outcome.frame, detected=outcome.detected, result=result)
    if outcome.timestamp_ms is not None:
        track.timestamp_ms = outcome.timestamp_ms
    return track
