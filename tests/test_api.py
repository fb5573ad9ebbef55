from __future__ import annotations

import json
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from service.http.schemas import FacesResponse, MeshTopology
from service.wire import BLENDSHAPE_NAMES
from tests.images import astronaut, encode, png_header_only

JPEG = {"Content-Type": "image/jpeg"}


def post_image(client: httpx.Client, data: bytes, **params: Any) -> dict[str, Any]:
    response = client.post("/v1/faces", content=data, headers=JPEG, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    FacesResponse.model_validate(body)
    return body


def only_face(body: dict[str, Any]) -> dict[str, Any]:
    faces = body["images"][0]["faces"]
    assert len(faces) == 1, faces
    return faces[0]


def euler(face: dict[str, Any]) -> np.ndarray:
    angles = face["pose"]["euler_deg"]
    return np.array([angles["pitch"], angles["yaw"], angles["roll"]])


def rotate_in_plane(image: np.ndarray, clockwise_deg: float) -> np.ndarray:
    """Rotate about the centre on a canvas large enough to keep every pixel."""
    height, width = image.shape[:2]
    side = int(np.ceil(np.hypot(height, width)))
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), -clockwise_deg, 1.0)
    matrix[:, 2] += [(side - width) / 2, (side - height) / 2]
    return cv2.warpAffine(image, matrix, (side, side))


def test_astronaut_has_one_near_frontal_face(client: httpx.Client) -> None:
    body = post_image(client, encode(astronaut()))
    image = body["images"][0]
    assert (image["width"], image["height"]) == (512, 512)
    assert image["camera"]["source"] == "default"
    face = only_face(body)
    pitch, yaw, roll = euler(face)
    # She looks down: 17.5 degrees with every step, 20 with one mesh pass (the default).
    assert abs(yaw) < 20 and abs(pitch) < 25 and abs(roll) < 15
    assert image["quality"] == "balanced"
    x1, y1, x2, y2 = face["box"]
    assert 150 < (x1 + x2) / 2 < 300 and 50 < (y1 + y2) / 2 < 200  # the face, not the suit
    assert face["score"] > 0.7 and face["presence"] > 0.9
    pose = face["pose"]
    rotation = np.array(pose["rotation_matrix"])
    assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
    assert np.linalg.norm(pose["quaternion_wxyz"]) == pytest.approx(1.0, abs=1e-6)
    assert 200 < pose["translation_mm"][2] < 2000
    assert pose["reprojection_rmse_px"] < 5


# The mirrored fit averages out the mesh model's left/right asymmetry; without it (balanced,
# fast) a flipped image's pitch differs by up to 2.4 degrees here.
# accurate lost its second mesh pass with V2: one pass, as balanced.
FLIP_TOLERANCE_DEG = {"accurate": 3.0, "balanced": 3.0, "fast": 3.0}


@pytest.mark.parametrize("quality", sorted(FLIP_TOLERANCE_DEG))
@pytest.mark.parametrize("turn", [0, 20])
def test_flip_negates_yaw_and_roll(client: httpx.Client, turn: float, quality: str) -> None:
    image = rotate_in_plane(astronaut(), turn)
    tolerance = FLIP_TOLERANCE_DEG[quality]
    body = post_image(client, encode(image), quality=quality)
    assert body["images"][0]["quality"] == quality
    pitch, yaw, roll = euler(only_face(body))
    f_pitch, f_yaw, f_roll = euler(only_face(post_image(client, encode(image[:, ::-1].copy()),
                                                        quality=quality)))
    assert abs(roll) > 2  # large enough for its sign to be tested
    assert np.sign(f_roll) == -np.sign(roll) and abs(f_roll + roll) < tolerance
    assert abs(f_yaw + yaw) < tolerance
    assert abs(f_pitch - pitch) < tolerance


@pytest.mark.parametrize("degrees", [30, -30])
def test_in_plane_rotation_changes_roll(client: httpx.Client, degrees: float) -> None:
    image = astronaut()
    roll = euler(only_face(post_image(client, encode(image))))[2]
    turned = euler(only_face(post_image(client, encode(rotate_in_plane(image, degrees)))))[2]
    assert turned - roll == pytest.approx(degrees, abs=3)


def test_blendshapes_are_the_52_named_scores(client: httpx.Client) -> None:
    face = only_face(post_image(client, encode(astronaut()), include="blendshapes"))
    scores = face["blendshapes"]
    assert list(scores) == list(BLENDSHAPE_NAMES) and len(scores) == 52
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    # The astronaut smiles, eyes open.
    assert min(scores["mouthSmileLeft"], scores["mouthSmileRight"]) > 0.5
    assert max(scores["eyeBlinkLeft"], scores["eyeBlinkRight"]) < 0.5
    assert "blendshapes" not in only_face(post_image(client, encode(astronaut())))


def test_includes_landmarks_mesh_and_iris(client: httpx.Client) -> None:
    face = only_face(post_image(client, encode(astronaut()),
                                include="mesh,landmarks,landmarks68,iris"))
    landmarks = np.array(face["landmarks"])
    assert landmarks.shape == (478, 2)  # FaceMesh V2: its 10 iris points last
    assert np.array(face["landmarks68"]).shape == (68, 2)
    vertices = np.array(face["mesh"]["vertices_mm"])
    assert vertices.shape == (468, 3)
    # The metric mesh projects back onto the 2D landmarks through the camera used.
    camera = post_image(client, encode(astronaut()))["images"][0]["camera"]
    projected = vertices[:, :2] / vertices[:, 2:] * [camera["fx"], camera["fy"]]
    projected += [camera["cx"], camera["cy"]]
    assert np.abs(projected - landmarks[:468]).max() < 0.05
    # V2's iris points are the irises the answer gives.
    assert np.allclose(landmarks[468], face["iris"]["right"]["centre"], atol=0.01)
    # A face is about 14 cm wide from cheek to cheek.
    assert 100 < np.ptp(vertices[:, 0]) < 200
    for side in ("right", "left"):
        iris = face["iris"][side]
        assert 1 < iris["radius_px"] < 15
        assert np.array(iris["contour"]).shape == (4, 2)
    # The subject's right iris is on the image left.
    assert face["iris"]["right"]["centre"][0] < face["iris"]["left"]["centre"][0]


def test_default_response_has_no_optional_arrays(client: httpx.Client) -> None:
    face = only_face(post_image(client, encode(astronaut())))
    assert {"landmarks", "landmarks68", "mesh", "iris"}.isdisjoint(
        k for k, v in face.items() if v is not None
    )


def test_intrinsics_from_request_are_used(client: httpx.Client) -> None:
    body = post_image(client, encode(astronaut()), fx=1000, fy=1000, cx=250, cy=260)
    camera = body["images"][0]["camera"]
    assert camera == {"fx": 1000, "fy": 1000, "cx": 250, "cy": 260, "source": "request"}
    near = post_image(client, encode(astronaut()), fx=500, fy=500)
    # The same face seen through twice the focal length is twice as far away.
    ratio = (only_face(body)["pose"]["translation_mm"][2]
             / only_face(near)["pose"]["translation_mm"][2])
    assert ratio == pytest.approx(2.0, rel=0.05)


def test_client_boxes_replace_the_detector(client: httpx.Client) -> None:
    detected = only_face(post_image(client, encode(astronaut()), include="landmarks68"))
    tight = np.array(detected["landmarks68"])
    box = [*tight.min(axis=0).tolist(), *tight.max(axis=0).tolist()]
    given = only_face(post_image(client, encode(astronaut()), boxes=json.dumps([[box]]),
                                 include="landmarks68"))
    assert given["score"] == 1.0
    assert np.abs(euler(given) - euler(detected)).max() < 2
    assert np.abs(np.array(given["landmarks68"]) - tight).mean() < 2
    # null: the detector, for that image.
    found = only_face(post_image(client, encode(astronaut()), boxes="[null]"))
    assert found["score"] == detected["score"] < 1.0


def test_multipart_images_each_get_an_entry_in_order(client: httpx.Client) -> None:
    image = astronaut()
    small = cv2.resize(image, (256, 256))
    files = [("images", ("a.jpg", encode(image), "image/jpeg")),
             ("images", ("bad.jpg", b"not an image at all", "image/jpeg")),
             ("images", ("b.png", encode(small, ".png"), "image/png"))]
    response = client.post("/v1/faces", files=files)
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert [entry["index"] for entry in images] == [0, 1, 2]
    assert len(images[0]["faces"]) == 1 and images[0]["error"] is None
    assert images[1]["error"]["code"] == "unsupported_image" and images[1]["faces"] == []
    assert (images[2]["width"], images[2]["height"]) == (256, 256)
    assert len(images[2]["faces"]) == 1
    # A face in a batch gets the same answer as alone.
    alone = only_face(post_image(client, encode(image)))
    assert np.abs(euler(images[0]["faces"][0]) - euler(alone)).max() < 1e-3


def test_several_faces_in_one_image(client: httpx.Client) -> None:
    tile = cv2.resize(astronaut(), (256, 256))
    mosaic = np.vstack([np.hstack([tile, tile[:, ::-1]]), np.hstack([tile[:, ::-1], tile])])
    faces = post_image(client, encode(mosaic))["images"][0]["faces"]
    assert len(faces) == 4
    yaws = sorted(round(euler(face)[1]) for face in faces)
    assert yaws[0] < 0 < yaws[-1]


def bad_request_cases() -> list[tuple[str, dict[str, Any], int, str]]:
    jpeg = encode(astronaut())
    return [
        ("empty body", {"content": b"", "headers": JPEG}, 400, "empty_image"),
        ("not an image", {"content": b"plain text", "headers": JPEG}, 415, "unsupported_image"),
        ("truncated", {"content": jpeg[: len(jpeg) // 2], "headers": JPEG}, 422,
         "corrupt_image"),
        ("unsupported content type", {"content": b"x", "headers": {"Content-Type": "text/plain"}},
         415, "unsupported_image"),
        ("pixel bomb", {"content": png_header_only(100_000, 100_000),
                        "headers": {"Content-Type": "image/png"}}, 413, "image_too_large"),
        ("image bytes", {"content": jpeg + b"\0" * 3_100_000, "headers": JPEG}, 413,
         "image_too_large"),
        ("body bytes", {"content": b"\xff" * 8_100_000, "headers": JPEG}, 413, "body_too_large"),
        ("malformed boxes", {"content": jpeg, "headers": JPEG, "params": {"boxes": "[[1,2"}},
         422, "bad_option"),
        ("boxes for wrong image count", {"content": jpeg, "headers": JPEG,
                                         "params": {"boxes": "[[[1,2,3,4]], []]"}},
         422, "bad_option"),
        ("inverted box", {"content": jpeg, "headers": JPEG,
                          "params": {"boxes": "[[[10,10,5,50]]]"}}, 422, "bad_option"),
        ("negative focal", {"content": jpeg, "headers": JPEG, "params": {"fx": -5}}, 422,
         "bad_option"),
        ("non-numeric focal", {"content": jpeg, "headers": JPEG, "params": {"fx": "abc"}}, 422,
         "bad_option"),
        ("nan principal point", {"content": jpeg, "headers": JPEG, "params": {"cx": "nan"}}, 422,
         "bad_option"),
        ("unknown include", {"content": jpeg, "headers": JPEG, "params": {"include": "pose3"}},
         422, "bad_option"),
        ("score out of range", {"content": jpeg, "headers": JPEG, "params": {"min_score": 2}},
         422, "bad_option"),
        ("unknown option", {"content": jpeg, "headers": JPEG, "params": {"foo": "bar"}},
         422, "bad_option"),
        ("misspelt option", {"content": jpeg, "headers": JPEG, "params": {"max_face": 2}},
         422, "bad_option"),
        ("unknown quality", {"content": jpeg, "headers": JPEG, "params": {"quality": "best"}},
         422, "bad_option"),
        ("no image parts", {"files": [("other", ("a.jpg", jpeg, "image/jpeg"))]}, 400,
         "bad_request"),
        ("too many images", {"files": [("images", (f"{i}.jpg", b"x", "image/jpeg"))
                                       for i in range(9)]}, 413, "too_many_images"),
    ]


@pytest.mark.parametrize(("case", "request_args", "status", "code"), bad_request_cases(),
                         ids=[case[0] for case in bad_request_cases()])
def test_bad_input_gets_its_4xx(client: httpx.Client, case: str, request_args: dict[str, Any],
                                status: int, code: str) -> None:
    response = client.post("/v1/faces", **request_args)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_image_jpg_is_taken_as_image_jpeg(client: httpx.Client) -> None:
    response = client.post("/v1/faces", content=encode(astronaut()),
                           headers={"Content-Type": "image/jpg"})
    assert response.status_code == 200
    assert len(response.json()["images"][0]["faces"]) == 1


def test_too_many_parts_say_so_plainly(client: httpx.Client) -> None:
    files = [("images", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(9)]
    error = client.post("/v1/faces", files=files).json()["error"]
    assert error == {"code": "too_many_images",
                     "message": "more than 8 parts; the limit is 8 images"}


def test_service_endpoints(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}
    models = client.get("/v1/models").json()
    assert models["ready"] and {m["name"] for m in models["models"]} >= {
        "face_detector_short", "face_detector_full", "face_mesh", "face_mesh_v2",
        "face_blendshapes", "iris"}
    topology = MeshTopology.model_validate(client.get("/v1/mesh/topology").json())
    assert topology.num_vertices == 468 and len(topology.landmarks68) == 68
    schema = client.get("/openapi.json").json()
    assert "/v1/faces" in schema["paths"]
    post_image(client, encode(astronaut()))
    metrics = client.get("/metrics").text
    for name in ("facepose_requests_total", "facepose_stage_duration_seconds_bucket",
                 "facepose_faces_per_image_bucket", "facepose_model_batch_size_bucket"):
        assert name in metrics
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"


def test_a_wrong_method_or_path_says_what_to_do(client: httpx.Client) -> None:
    response = client.get("/v1/faces")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert "send POST" in error["message"] and "/v1/faces" in error["message"]
    missing = client.post("/v1/face")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "/v1/face" in missing.json()["error"]["message"]
