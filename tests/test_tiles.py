"""Small faces in large photos: found in tiles, in process, over the real models."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from service.app.images import EncodedImages, decode_request_images
from service.app.options import options_model
from service.config import Quality, Settings
from service.pipeline.detect import box_iou
from service.pipeline.estimate import estimate_faces
from service.pipeline.records import Face, ImageResult
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from tests.images import GROUP_PHOTO_FACES, astronaut, encode, group_photo

SETTINGS = Settings(grpc_port=0)
# The astronaut's face spans about 94 of her 512 px.
FACE_OF_PHOTO = 94 / 512


@pytest.fixture(scope="module")
def runtime() -> Iterator[InferenceRuntime]:
    runtime = create_runtime(SETTINGS)
    yield runtime
    runtime.close()


def estimate(runtime: InferenceRuntime, data: bytes, **options: object) -> ImageResult:
    """One encoded image through the decode and pipeline the gateway runs."""
    model = options_model(SETTINGS)
    (decoded,) = decode_request_images(SETTINGS, EncodedImages([data], whole=True),
                                       model.model_validate(options))
    assert decoded.request is not None
    (result,) = estimate_faces(runtime, [decoded.request])
    return result


def group(face_px: int, width: int, height: int) -> tuple[bytes, np.ndarray]:
    """Astronauts with faces of about ``face_px`` spread over a grey canvas; the JPEG and
    where each photo went (N, 4)."""
    side = round(face_px / FACE_OF_PHOTO)
    photo = cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 110, np.uint8)
    placed = []
    step = side * 5 // 4
    for y in range(side // 4, height - side, step):
        for x in range(side // 4, width - side, step):
            canvas[y:y + side, x:x + side] = photo
            placed.append([x, y, x + side, y + side])
    return encode(canvas, quality=90), np.array(placed, float)


def test_faces_of_80_px_in_a_6_megapixel_photo_are_found_in_tiles(
        runtime: InferenceRuntime) -> None:
    data, placed = group(80, 3000, 2000)
    assert len(placed) >= 12
    results = {quality: estimate(runtime, data, max_faces=32, quality=quality)
               for quality in ("fast", "balanced")}
    # One pass over the whole photo sees faces of 375 px and up: none of these.
    assert len(results["fast"].faces) <= 2 and results["fast"].min_face_px == 375
    faces = results["balanced"].faces
    assert results["balanced"].min_face_px == 48
    inside = [any(box_iou(face.box, placed[k:k + 1])[0] > 0 for face in faces)
              for k in range(len(placed))]
    assert np.mean(inside) >= 0.9
    # Every face found is one of hers, found once.
    assert len(faces) <= len(placed)
    assert all(box_iou(face.box, placed).max() > 0 for face in faces)


def test_the_client_chooses_how_small(runtime: InferenceRuntime) -> None:
    data, _ = group(80, 3000, 2000)
    result = estimate(runtime, data, quality="fast", min_face_px=64)
    assert result.min_face_px == 64 and len(result.faces) >= 10
    with pytest.raises(ValueError, match="min_face_px"):
        options_model(SETTINGS).model_validate({"min_face_px": 8})


def test_a_wide_photo_gets_the_box_a_square_crop_of_it_gets(runtime: InferenceRuntime) -> None:
    # The whole-image pass letterboxes a 16:9 photo and answered a box 40% too large; the
    # tile that holds the face sees it without padding.
    side = 2160
    photo = cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    wide = np.full((side, 3840, 3), 200, np.uint8)
    left = (3840 - side) // 2
    wide[:, left:left + side] = photo
    boxes = []
    for image, offset in ((wide, left), (photo, 0)):
        (face,) = estimate(runtime, encode(image)).faces
        boxes.append(face.box - [offset, 0, offset, 0])
    face_side = boxes[1][2] - boxes[1][0]
    assert np.abs(boxes[0] - boxes[1]).max() < 0.1 * face_side


def matched(faces: list[Face], truth: np.ndarray, min_iou: float = 0.5) -> tuple[int, int]:
    """(faces of ``truth`` found, faces found that are none of them)."""
    boxes = np.array([face.box for face in faces]).reshape(-1, 4)
    found = sum(1 for box in truth if len(boxes) and box_iou(box, boxes).max() > min_iou)
    false = sum(1 for box in boxes if box_iou(box, truth).max() <= min_iou)
    return found, false


@pytest.mark.parametrize("quality", list(Quality))
def test_a_real_group_photo_has_its_six_faces_found(runtime: InferenceRuntime,
                                                     quality: Quality) -> None:
    result = estimate(runtime, group_photo(), quality=quality)
    assert len(result.faces) == 6
    assert matched(result.faces, GROUP_PHOTO_FACES) == (6, 0)


def test_the_group_photo_small_in_a_12_megapixel_photo(runtime: InferenceRuntime) -> None:
    # Four copies of it, shrunk so that its smallest face is 64 px, on
    # a 4032x3024 grey canvas: one pass over the whole would see faces of 250 px and up.
    photo = cv2.cvtColor(cv2.imdecode(np.frombuffer(group_photo(), np.uint8),
                                      cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    scale = 64 / float(np.min(GROUP_PHOTO_FACES[:, 2:] - GROUP_PHOTO_FACES[:, :2]))
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((3024, 4032, 3), 110, np.uint8)
    truth = []
    for x, y in ((300, 200), (2400, 500), (700, 1800), (2900, 2300)):
        canvas[y:y + small.shape[0], x:x + small.shape[1]] = small
        truth.append(GROUP_PHOTO_FACES * scale + [x, y, x, y])
    result = estimate(runtime, encode(canvas, quality=90), max_faces=32)
    assert result.min_face_px == 48
    found, false = matched(result.faces, np.concatenate(truth))
    assert found >= 0.75 * 24 and false == 0
