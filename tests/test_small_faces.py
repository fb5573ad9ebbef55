"""Faces of 48 px and up in everyday images (webcam frames, web photos), found by default; the
smallest face searched is the one asked for; one face, one answer."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from service.config import Quality, Settings
from service.pipeline.detect import Detections, drop_enclosing_boxes
from service.pipeline.presets import PRESETS
from service.pipeline.records import ImageRequest, PipelineOptions
from service.pipeline.solve import default_camera
from service.pipeline.stages import FaceSearch, face_search
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from tests.images import GROUP_PHOTO_FACES, astronaut, encode, group_photo
from tests.test_pipeline_branches import CountingRuntime
from tests.test_tiles import estimate, matched

SETTINGS = Settings(grpc_port=0)


@pytest.fixture(scope="module")
def runtime() -> Iterator[InferenceRuntime]:
    runtime = create_runtime(SETTINGS)
    yield runtime
    runtime.close()


# The astronaut's head, and her face's box in it (as the detector boxes it at full size).
HEAD = (slice(30, 230), slice(125, 325))
FACE_IN_HEAD = np.array([178.0 - 125, 81.0 - 30, 272.0 - 125, 175.0 - 30])


def heads(face_px: int, width: int, height: int) -> tuple[bytes, np.ndarray]:
    """Her head, scaled so that her face is ``face_px``, on a grid over a grey frame: the JPEG
    and each face's box (N, 4)."""
    scale = face_px / float(FACE_IN_HEAD[2] - FACE_IN_HEAD[0])
    head = cv2.resize(astronaut()[HEAD], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 110, np.uint8)
    boxes = []
    step = head.shape[1] * 3 // 2
    for y in range(10, height - head.shape[0], step):
        for x in range(10, width - head.shape[1], step):
            frame[y:y + head.shape[0], x:x + head.shape[1]] = head
            boxes.append(FACE_IN_HEAD * scale + [x, y, x, y])
    return encode(frame, quality=90), np.array(boxes)


def request_of(width: int, height: int, min_face_px: int | None = None) -> ImageRequest:
    return ImageRequest(np.zeros((height, width, 3), np.uint8),
                        default_camera(width, height, 40.0),
                        PipelineOptions(16, 0.5, 0.5, min_face_px=min_face_px))


@pytest.mark.parametrize(("size", "asked", "expected"), [
    # The whole pass over 128 px sees faces of a 16th of the longer side.
    ((320, 240), None, FaceSearch(40.0)),  # sees 40 px: no search needed
    # Searched where no portrait: a lone sure face of 1.15 times what the whole pass sees.
    ((450, 450), None, FaceSearch(56.25, 48, portrait_px=1.15 * 56.25)),
    ((640, 480), None, FaceSearch(80.0, 48, portrait_px=1.15 * 80)),
    ((1280, 720), None, FaceSearch(160.0, 48)),  # most faces asked for: tiles at once
    ((640, 480), 64, FaceSearch(80.0, 64)),  # the client's size, searched whatever is found
    ((640, 480), 96, FaceSearch(80.0)),
])
def test_the_smallest_face_searched_is_the_one_asked_for(size: tuple[int, int],
                                                         asked: int | None,
                                                         expected: FaceSearch) -> None:
    search = face_search(request_of(*size, asked), PRESETS[Quality.BALANCED], 128)
    assert search == expected


def test_a_client_min_face_px_is_what_the_entry_says(runtime: InferenceRuntime) -> None:
    """min_face_px=64 in a 640x480 frame: searched down to 64, not to the 80 the whole pass
    sees (the entry used to say 80, and the face was missed)."""
    data, _ = heads(56, 640, 480)
    result = estimate(runtime, data, min_face_px=64)
    assert result.min_face_px == 64


def test_small_faces_in_a_webcam_frame_are_found_by_default(runtime: InferenceRuntime) -> None:
    data, placed = heads(52, 640, 480)
    assert len(placed) >= 6
    result = estimate(runtime, data, max_faces=32)
    assert result.min_face_px == 48
    found, false = matched(result.faces, placed, min_iou=0.3)
    assert found >= 0.8 * len(placed) and false == 0


def test_the_group_photo_at_640_px_has_its_six_faces(runtime: InferenceRuntime) -> None:
    photo = cv2.imdecode(np.frombuffer(group_photo(), np.uint8), cv2.IMREAD_COLOR)
    scale = 640 / photo.shape[1]
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    result = estimate(runtime, data.tobytes())
    assert matched(result.faces, GROUP_PHOTO_FACES * scale) == (6, 0)


def test_a_portrait_pays_for_no_search(runtime: InferenceRuntime) -> None:
    """A 640x480 frame of one 98 px face (the bench's): no tiles; the entry says the whole
    pass's 80 px was searched."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 64:576] = cv2.resize(astronaut(), (512, 480))
    (decoded,) = [frame]
    counting = CountingRuntime(runtime)
    from service.pipeline.estimate import estimate_faces

    (result,) = estimate_faces(counting, [ImageRequest(
        decoded, default_camera(640, 480, 40.0),
        PipelineOptions(16, 0.5, 0.5, quality=Quality.BALANCED))])
    assert len(result.faces) == 1 and result.min_face_px == 80
    assert counting.batches("face_detector_short") == [1]


def detections(*rows: tuple[float, float, float, float]) -> Detections:
    """Square boxes from (centre x, centre y, side, score)."""
    boxes = np.array([[x - s / 2, y - s / 2, x + s / 2, y + s / 2] for x, y, s, _ in rows])
    return Detections(boxes, np.zeros((len(rows), 6, 2)), np.array([r[3] for r in rows]))


def test_a_loose_box_around_a_face_is_not_a_second_face() -> None:
    found = drop_enclosing_boxes(detections((320, 240, 150, 0.56), (325, 236, 60, 0.9)))
    assert found.scores.tolist() == [0.9]


def test_a_box_holding_a_better_face_is_that_face_not_another() -> None:
    found = drop_enclosing_boxes(detections((300, 200, 120, 0.7), (330, 230, 70, 0.8)))
    assert found.scores.tolist() == [0.8]


def test_a_sure_face_keeps_what_it_holds_and_neighbours_stay() -> None:
    # The detector sure of the large face: a weaker small box inside does not remove it.
    sure = drop_enclosing_boxes(detections((300, 200, 150, 0.95), (300, 200, 60, 0.7)))
    assert sorted(sure.scores.tolist()) == [0.7, 0.95]
    # Side by side, overlapping a little: two faces.
    pair = drop_enclosing_boxes(detections((300, 200, 100, 0.6), (380, 200, 60, 0.9)))
    assert sorted(pair.scores.tolist()) == [0.6, 0.9]


def test_one_sure_face_is_a_portrait_and_two_are_a_group() -> None:
    from service.pipeline.stages import is_portrait

    search = FaceSearch(80.0, 48, portrait_px=92.0)
    assert is_portrait(detections((320, 240, 98, 0.9)), search)
    assert not is_portrait(detections((320, 240, 98, 0.6)), search)  # unsure
    assert not is_portrait(detections((320, 240, 70, 0.9)), search)  # small
    assert not is_portrait(detections((200, 240, 98, 0.9), (450, 240, 60, 0.8)),
                           search)  # a group


def test_a_degenerate_box_takes_no_face_with_it() -> None:
    """A box of no area is inside any other: it must not drop a real face around it."""
    found = Detections(np.array([[300.0, 200.0, 300.0, 200.0], [250.0, 150.0, 350.0, 250.0]]),
                       np.zeros((2, 6, 2)), np.array([0.9, 0.6]))
    assert sorted(drop_enclosing_boxes(found).scores.tolist()) == [0.6, 0.9]
