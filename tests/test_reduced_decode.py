"""Large JPEGs are decoded at reduced scale and, where a face needs it, again at a finer one;
either way the results are in full-size pixels and agree with a full-size decode."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from service.app.images import EncodedImages, ImageOutcome, decode_request_images
from service.app.options import RequestOptions, options_model
from service.config import Settings
from service.pipeline.decode import decode_pixels, reduction_for
from service.pipeline.estimate import estimate_faces
from service.pipeline.records import ImageRequest, ImageResult
from service.pipeline.scale import rescale_camera, rescale_landmarks, rescale_xy
from service.pipeline.solve import Camera, euler_pitch_yaw_roll_deg
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from tests.images import astronaut, encode, jpeg_with_orientation


@pytest.fixture(scope="module")
def runtime() -> Iterator[InferenceRuntime]:
    runtime = create_runtime(Settings())
    yield runtime
    runtime.close()


def options(settings: Settings, **given: object) -> RequestOptions:
    return options_model(settings).model_validate(given)


def decode_images(settings: Settings, data: bytes, request_options: RequestOptions,
                  reduce: bool = True, boxes: list[np.ndarray | None] | None = None
                  ) -> tuple[list[ImageOutcome], list[ImageRequest]]:
    """The image's outcome (its size) and what the pipeline is given for it."""
    outcomes = decode_request_images(settings, EncodedImages([data], boxes, whole=True),
                                     request_options, reduce=reduce)
    return outcomes, [o.request for o in outcomes if o.request is not None]


def run(runtime: InferenceRuntime, data: bytes, reduce: bool, **given: object
        ) -> tuple[ImageResult, int, list[int]]:
    """The image's result, the reduction it was decoded at, and the reductions it was decoded
    at again."""
    settings = Settings()
    _, requests = decode_images(settings, data, options(settings, **given), reduce=reduce)
    request = requests[0]
    redecoded: list[int] = []
    redecode = request.redecode
    assert redecode is not None

    def counted(reduction: int) -> np.ndarray:
        redecoded.append(reduction)
        return redecode(reduction)

    request.redecode = counted
    return estimate_faces(runtime, requests)[0], request.reduction, redecoded


def on_canvas(face_side: int, canvas: tuple[int, int]) -> np.ndarray:
    """The astronaut scaled to face_side x face_side, placed on a grey canvas (H, W)."""
    image = np.full((*canvas, 3), 90, np.uint8)
    scaled = cv2.resize(astronaut(), (face_side, face_side), interpolation=cv2.INTER_AREA)
    top, left = (canvas[0] - face_side) // 2, (canvas[1] - face_side) // 3
    image[top:top + face_side, left:left + face_side] = scaled
    return image


def test_rescaling_round_trips_and_keeps_rays() -> None:
    points = np.array([[0.0, 0.0], [10.5, 3.25], [959.0, 539.0]])
    assert np.allclose(rescale_xy(rescale_xy(points, 1 / 4), 4), points)
    camera = Camera(1200.0, 1100.0, 960.0, 540.0, "request")
    assert rescale_camera(rescale_camera(camera, 1 / 2), 2) == camera
    # A ray hits corresponding pixels in both scales.
    ray = np.array([0.1, -0.05, 1.0])
    half = rescale_camera(camera, 1 / 2)
    full_px = (camera.matrix @ ray)[:2]
    half_px = (half.matrix @ ray)[:2]
    assert np.allclose(rescale_xy(half_px, 2), full_px)
    landmarks = np.array([[[4.0, 6.0, -2.0]]])
    assert np.allclose(rescale_landmarks(landmarks, 2), [[[8.5, 12.5, -4.0]]])


def test_reduction_only_for_large_jpegs() -> None:
    assert reduction_for("JPEG", 640, 480, 1280) == 1
    assert reduction_for("JPEG", 1920, 1080, 1280) == 1
    assert reduction_for("JPEG", 3840, 2160, 1280) == 2
    assert reduction_for("JPEG", 6000, 4000, 1280) == 4
    assert reduction_for("JPEG", 16000, 9000, 1280) == 8
    assert reduction_for("PNG", 3840, 2160, 1280) == 1


def test_reduced_decode_keeps_exif_orientation() -> None:
    stored = on_canvas(600, (1300, 2600))
    data = jpeg_with_orientation(stored, 6)  # displayed turned a quarter clockwise
    assert decode_pixels(data, "JPEG", 1).shape == (2600, 1300, 3)
    assert decode_pixels(data, "JPEG", 2).shape == (1300, 650, 3)
    settings = Settings()
    entries, requests = decode_images(settings, data, options(settings))
    assert requests[0].reduction == 2
    assert (entries[0].width, entries[0].height) == (1300, 2600)


def test_large_face_is_fitted_at_reduced_scale(runtime: InferenceRuntime) -> None:
    data = encode(on_canvas(3600, (4000, 6000)))  # a 24-megapixel photo, face 630 px wide
    # One pass, no small faces searched for: as reduced as the working side allows.
    reduced, reduction, redecoded = run(runtime, data, reduce=True, quality="fast")
    full, _, _ = run(runtime, data, reduce=False, quality="fast")
    assert (reduction, redecoded) == (4, [])
    # Faces of 64 px searched for (the default) keep 32 px at 1/2.
    assert run(runtime, data, reduce=True)[1] == 2
    assert reduced.camera == full.camera
    assert len(reduced.faces) == len(full.faces) == 1
    face, reference = reduced.faces[0], full.faces[0]
    side = reference.box[2] - reference.box[0]
    # The same face to a percent of its size, the same pose to a degree or two.
    assert np.abs(face.box - reference.box).max() < 0.02 * side
    assert np.median(np.linalg.norm(face.landmarks_px[:, :2] - reference.landmarks_px[:, :2],
                                     axis=1)) < 0.01 * side
    angles = np.subtract(euler_pitch_yaw_roll_deg(face.pose.r_cam_from_model),
                         euler_pitch_yaw_roll_deg(reference.pose.r_cam_from_model))
    assert np.abs(angles).max() < 2.0
    assert abs(face.pose.t_cam_from_model_mm[2] / reference.pose.t_cam_from_model_mm[2] - 1) < 0.03


def test_small_face_is_fitted_from_a_finer_decode(runtime: InferenceRuntime) -> None:
    data = encode(on_canvas(650, (2160, 3840)))  # 4K, face 120 px wide
    reduced, reduction, redecoded = run(runtime, data, reduce=True)
    full, _, _ = run(runtime, data, reduce=False)
    assert (reduction, redecoded) == (2, [1])
    assert len(reduced.faces) == len(full.faces) == 1
    # Decoded again at full size for the mesh, so the landmarks agree to a fraction of a pixel
    # (the detections, from the reduced image, differ a little and so do the crops).
    error = np.linalg.norm(reduced.faces[0].landmarks_px[:, :2]
                           - full.faces[0].landmarks_px[:, :2], axis=1)
    assert np.median(error) < 1.0


def test_client_boxes_and_iris_come_back_in_full_size_pixels(runtime: InferenceRuntime
                                                             ) -> None:
    settings = Settings()
    data = encode(on_canvas(3600, (4000, 6000)))
    full, _, _ = run(runtime, data, reduce=False)
    box = full.faces[0].box
    # The second mesh pass places the eyes' crops from the landmarks, whatever pixels the
    # detector's keypoints came from; with one pass they follow the first crop.
    query = options(settings, include=["iris"], quality="accurate")
    _, requests = decode_images(settings, data, query, boxes=[box[None]])
    assert requests[0].reduction == 4
    (result,) = estimate_faces(runtime, requests)
    face = result.faces[0]
    # The client's box is returned as given, in the pixels it was given in.
    assert np.allclose(face.box, box, atol=1e-6)
    # Eyes need every pixel: decoded again at full size, the irises agree with a full run to a
    # fraction of a percent of the face (the detector keypoints that turn the crop came from
    # the reduced image).
    _, full_requests = decode_images(settings, data, query, reduce=False, boxes=[box[None]])
    (reference,) = estimate_faces(runtime, full_requests)
    side = box[2] - box[0]
    assert face.iris is not None and reference.faces[0].iris is not None
    for eye, reference_eye in ((face.iris.left, reference.faces[0].iris.left),
                               (face.iris.right, reference.faces[0].iris.right)):
        assert np.linalg.norm(eye.centre - reference_eye.centre) < 0.005 * side
        assert abs(eye.radius_px - reference_eye.radius_px) < 0.1 * reference_eye.radius_px


def test_nearly_square_reduced_jpeg_keeps_its_size_and_rmse_is_in_full_pixels(
        runtime: InferenceRuntime) -> None:
    # 4000 x 3999 decodes at 1/2 to 2000 x 2000: the shape alone cannot tell which side is which.
    settings = Settings()
    image = np.full((3999, 4000, 3), 90, np.uint8)
    image[800:3200, 900:3300] = cv2.resize(astronaut(), (2400, 2400))
    data = encode(image)
    entries, requests = decode_images(settings, data, options(settings))
    assert requests[0].reduction == 2 and requests[0].image.shape[:2] == (2000, 2000)
    assert (entries[0].width, entries[0].height) == (4000, 3999)
    (reduced,) = estimate_faces(runtime, requests)
    full, _, _ = run(runtime, data, reduce=False)
    # The reprojection error is in full-size pixels, as the landmarks are.
    ratio = reduced.faces[0].pose.reprojection_rmse_px / full.faces[0].pose.reprojection_rmse_px
    assert 0.75 < ratio < 1.33
