"""POST /v1/render over real HTTP, and the drawing itself on a face posed by hand."""

from __future__ import annotations

import json
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from service.config import Settings
from service.http.render import negotiate_format
from service.pipeline.decode import reduction_for
from service.pipeline.draw import draw_points, draw_wireframe, head_axes_px, render, style_for
from service.pipeline.records import Face, ImageResult
from service.pipeline.solve import (
    Pose,
    default_camera,
    load_canonical_face,
    rotation_from_euler_deg,
)
from tests.images import astronaut, encode

PNG = {"Content-Type": "image/png"}


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def face_box(client: httpx.Client, data: bytes) -> np.ndarray:
    body = client.post("/v1/faces", content=data, headers=PNG).json()
    (face,) = body["images"][0]["faces"]
    return np.array(face["box"])


def near_face(box: np.ndarray, shape: tuple[int, ...], grow: float = 1.0) -> np.ndarray:
    """(H, W) bool: inside the box grown by ``grow`` box sides on every side."""
    side = np.max(box[2:] - box[:2])
    x1, y1 = np.floor(box[:2] - grow * side).astype(int)
    x2, y2 = np.ceil(box[2:] + grow * side).astype(int)
    mask = np.zeros(shape[:2], bool)
    mask[max(0, y1):y2, max(0, x1):x2] = True
    return mask


def render_call(client: httpx.Client, data: bytes, headers: dict[str, str] | None = None,
                **params: Any) -> httpx.Response:
    return client.post("/v1/render", content=data, headers={**PNG, **(headers or {})},
                       params=params)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


@pytest.mark.slow
def test_render_changes_only_the_face(client: httpx.Client) -> None:
    image = astronaut()
    data = encode(image, ".png")
    response = render_call(client, data, format="png")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-face-count"] == "1"
    assert response.headers["x-quality"] == "balanced"
    assert render_call(client, data, quality="fast").headers["x-quality"] == "fast"
    assert render_call(client, data, quality="best").status_code == 422
    drawn = decode(response.content)
    assert drawn.shape == image.shape
    changed = np.any(drawn != image, axis=2)
    near = near_face(face_box(client, data), image.shape)
    # PNG in, PNG out: away from the face not one pixel differs.
    assert not changed[~near].any()
    assert changed[near].mean() > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("draw", ["landmarks68", "landmarks", "mesh,iris"])
def test_every_drawing_stays_near_the_face(client: httpx.Client, draw: str) -> None:
    image = astronaut()
    data = encode(image, ".png")
    response = render_call(client, data, format="png", include=draw)
    assert response.status_code == 200, response.text
    changed = np.any(decode(response.content) != image, axis=2)
    near = near_face(face_box(client, data), image.shape)
    assert changed[near].any() and not changed[~near].any()


@pytest.mark.slow
def test_large_jpeg_is_drawn_at_full_size(client: httpx.Client) -> None:
    # /v1/faces decodes a large JPEG at reduced scale; the render must still be full size.
    working_side = Settings().decode_working_side
    side = 2 * working_side
    assert reduction_for("JPEG", side, side, working_side) > 1  # the premise of this test
    image = cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    data = encode(image, quality=85)
    response = render_call(client, data, {"Content-Type": "image/jpeg"}, format="png")
    assert response.status_code == 200, response.text
    drawn = decode(response.content)
    assert drawn.shape == image.shape
    box = np.array(client.post("/v1/faces", content=data, headers={"Content-Type": "image/jpeg"}
                               ).json()["images"][0]["faces"][0]["box"])
    near = near_face(box, image.shape)
    error = np.abs(drawn.astype(int) - decode(data).astype(int)).max(axis=2)
    assert np.percentile(error[~near], 99.9) <= 8  # at most decoder differences away from it
    assert (error[near] > 40).mean() > 0.05


@pytest.mark.slow
def test_jpeg_by_accept_header_and_by_default(client: httpx.Client) -> None:
    image = astronaut()
    data = encode(image, ".png")
    near = near_face(face_box(client, data), image.shape)
    for headers in ({"Accept": "image/jpeg"}, {}, {"Accept": "*/*"}):
        response = render_call(client, data, headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/jpeg"
        drawn = decode(response.content)
        assert drawn.shape == image.shape
        # JPEG re-encoding noise only, away from the face.
        error = np.abs(drawn.astype(int) - image.astype(int)).mean(axis=2)
        assert error[~near].mean() < 4
    png = render_call(client, data, {"Accept": "image/jpeg;q=0.5, image/png"})
    assert png.headers["content-type"] == "image/png"


@pytest.mark.slow
def test_multipart_renders_one_image_and_refuses_two(client: httpx.Client) -> None:
    data = encode(astronaut())
    one = client.post("/v1/render", files=[("images", ("a.jpg", data, "image/jpeg"))],
                      params={"format": "png"})
    assert one.status_code == 200, one.text
    assert decode(one.content).shape == (512, 512, 3)
    two = client.post("/v1/render", files=[("images", ("a.jpg", data, "image/jpeg"))] * 2)
    assert_error(two, 400, "one_image_only")


@pytest.mark.slow
def test_options_apply_as_for_faces(client: httpx.Client) -> None:
    image = astronaut()
    data = encode(image, ".png")
    box = face_box(client, data)
    given = render_call(client, data, format="png", boxes=json.dumps([[box.tolist()]]),
                        fx=900, min_presence=0)
    assert given.status_code == 200, given.text
    assert given.headers["x-face-count"] == "1"
    none = render_call(client, data, format="png", boxes="[[]]")
    assert none.headers["x-face-count"] == "0"
    assert np.array_equal(decode(none.content), image)  # nothing to draw: the photo as sent


@pytest.mark.slow
def test_bad_requests_get_the_json_error_shape(client: httpx.Client) -> None:
    data = encode(astronaut())
    assert_error(render_call(client, b"not an image"), 415, "unsupported_image")
    assert_error(render_call(client, data[: len(data) // 3], {"Content-Type": "image/jpeg"}),
                 422, "corrupt_image")
    assert_error(render_call(client, data, format="gif"), 422, "bad_option")
    assert_error(render_call(client, data, include="everything"), 422, "bad_option")
    assert_error(render_call(client, data, boxes="[[], []]"), 422, "bad_option")
    assert_error(render_call(client, b""), 400, "empty_image")
    assert_error(client.post("/v1/render", content=data), 415, "unsupported_image")


def test_format_negotiation() -> None:
    assert negotiate_format(None, None) == "jpeg"
    assert negotiate_format(None, "image/png") == "png"
    assert negotiate_format(None, "image/png, image/jpeg") == "jpeg"  # a tie: JPEG
    assert negotiate_format(None, "image/jpeg;q=0.4, image/png;q=0.9") == "png"
    assert negotiate_format(None, "image/*, image/png") == "png"  # exact beats wildcard
    assert negotiate_format(None, "application/json") == "jpeg"
    assert negotiate_format("png", "image/jpeg") == "png"  # format= wins
    assert negotiate_format(None, "image/png;q=0, image/*") == "jpeg"  # q=0: not acceptable
    assert negotiate_format(None, "image/jpeg;q=0.5, */*") == "png"  # the exact range's q
    assert negotiate_format(None, "image/png;q=0") == "jpeg"


def posed_face(yaw: float, pitch: float, width: int = 640, height: int = 480,
               distance_mm: float = 500.0) -> ImageResult:
    """A frame with the canonical face posed by hand, as the pipeline would return it."""
    camera = default_camera(width, height, 40.0)
    face_model = load_canonical_face()
    rotation = rotation_from_euler_deg(pitch, yaw, 0.0)
    translation = np.array([0.0, 0.0, distance_mm])
    vertices = face_model.vertices_mm @ rotation.T + translation
    pixels = vertices @ camera.matrix.T
    landmarks = np.column_stack([pixels[:, :2] / pixels[:, 2:], vertices[:, 2]])
    box = np.concatenate([landmarks[:, :2].min(axis=0), landmarks[:, :2].max(axis=0)])
    face = Face(box, 0.9, 1.0, Pose(rotation, translation, 0.0), landmarks, vertices, 2.0)
    return ImageResult(camera, [face])


def test_axes_follow_the_pose() -> None:
    # +yaw: the nose, and so the z axis out of the face, moves to image left.
    result = posed_face(yaw=40, pitch=0)
    origin, ends = head_axes_px(result.faces[0], result.camera)
    assert ends[2, 0] < origin[0] - 20
    assert ends[0, 0] > origin[0] + 20  # x: the subject's left, image right
    assert ends[1, 1] < origin[1] - 20  # y: up
    # +pitch: head up, so the z axis points up the image.
    result = posed_face(yaw=0, pitch=30)
    origin, ends = head_axes_px(result.faces[0], result.camera)
    assert ends[2, 1] < origin[1] - 20


@pytest.mark.parametrize("draw", [draw_wireframe, draw_points])
def test_hidden_parts_are_drawn_dimmer(draw: Any) -> None:
    landmarks = posed_face(yaw=20, pitch=0).faces[0].landmarks_px[:, :2]
    ink = []
    for visible in (np.zeros(468, bool), np.ones(468, bool)):
        canvas = np.zeros((480, 640, 3), np.uint8)
        draw(canvas, landmarks, visible, 1)
        ink.append(canvas.astype(float).sum(axis=2).max())
    hidden, shown = ink
    assert 0 < hidden < 0.5 * shown


def test_lines_and_text_grow_with_the_image() -> None:
    small, large = style_for(320, 240), style_for(4000, 3000)
    assert small.line >= 1 and small.font_scale >= 0.35
    assert large.line >= 5 * small.line / 2 and large.font_scale > 5 * small.font_scale
    result = posed_face(yaw=10, pitch=5, width=320, height=240)
    drawn = render(np.zeros((240, 320, 3), np.uint8), result, frozenset())
    assert drawn.shape == (240, 320, 3) and drawn.any()


def test_group_photo_panels_are_numbered_and_clear_of_each_other(client: httpx.Client) -> None:
    """insightface's t1.jpg, six faces side by side: each face's number (as in the table) and
    angles sit on panels that cover no other panel and no face's box."""
    from service.clients.local import FacePose
    from service.pipeline.draw import face_panels
    from tests.images import group_photo

    data = group_photo()
    with FacePose() as facepose:
        (outcome,), _ = facepose.outcomes([data], None, {})
    result = outcome.result
    assert result is not None and len(result.faces) == 6
    height, width = outcome.height, outcome.width
    panels = face_panels(result, style_for(width, height), width, height)
    assert [panel.lines[0].split()[0] for panel in panels[::2]] == [f"#{n}" for n in range(1, 7)]
    rects = [panel.rect for panel in panels]
    boxes = [tuple(round(float(v)) for v in face.box) for face in result.faces]

    def overlap(a: tuple[int, ...], b: tuple[int, ...]) -> int:
        return (max(0, min(a[2], b[2]) - max(a[0], b[0]))
                * max(0, min(a[3], b[3]) - max(a[1], b[1])))

    for i, rect in enumerate(rects):
        assert all(overlap(rect, other) == 0 for other in rects[i + 1:]), (i, rect)
        assert all(overlap(rect, box) == 0 for box in boxes), (i, rect)


def test_a_small_face_in_a_large_photo_is_drawn_to_its_own_scale() -> None:
    """A 72 px face in a 4000x3000 photo keeps as much of itself uncovered by its box, axes and
    points as the same face in a 640x480 frame: the lines follow the face, not the photo."""
    covered = []
    for width, height in ((640, 480), (4000, 3000)):
        focal = default_camera(width, height, 40.0).fx
        result = posed_face(yaw=20, pitch=5, width=width, height=height,
                            distance_mm=2.0 * focal)  # about 72 px wide in either
        x1, y1, x2, y2 = np.round(result.faces[0].box).astype(int)
        assert 60 < x2 - x1 < 90
        drawn = render(np.zeros((height, width, 3), np.uint8), result,
                       frozenset({"landmarks68"}))
        covered.append(float(drawn[y1:y2, x1:x2].any(axis=2).mean()))
    small_frame, large_photo = covered
    assert large_photo < 1.25 * small_frame, covered
    assert large_photo < 0.5, covered
