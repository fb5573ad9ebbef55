"""Per-vertex visibility: the geometry on the canonical face posed by hand, then through the
API (REST and gRPC) on real photos."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from service.clients import GrpcClient
from service.pipeline.solve import load_canonical_face, rotation_from_euler_deg
from service.pipeline.visibility import facing_camera, occluded, visible_vertices
from tests.conftest import SHARED_DATA
from tests.images import astronaut, encode

AFLW_DEV = SHARED_DATA / "aflw2000-dev"


def posed(pitch: float = 0.0, yaw: float = 0.0, roll: float = 0.0,
          distance_mm: float = 600.0) -> np.ndarray:
    """The canonical face turned by these angles, ``distance_mm`` in front of the camera."""
    rotation = rotation_from_euler_deg(pitch, yaw, roll)
    return load_canonical_face().vertices_mm @ rotation.T + [0.0, 0.0, distance_mm]


def canonical_x() -> np.ndarray:
    """Each vertex's x in the canonical face: negative on the subject's right (image left)."""
    return load_canonical_face().vertices_mm[:, 0]


def test_frontal_face_is_all_visible() -> None:
    visible = visible_vertices(posed(), load_canonical_face().triangles)
    assert visible.dtype == bool and visible.shape == (468,)
    assert visible.mean() > 0.98


@pytest.mark.parametrize("yaw", [60, -60])
def test_turned_face_hides_its_far_side(yaw: float) -> None:
    # +yaw moves the nose to image left: the subject's right cheek (x < 0) turns away.
    visible = visible_vertices(posed(yaw=yaw), load_canonical_face().triangles)
    far, near = (canonical_x() < -40, canonical_x() > 40) if yaw > 0 else (
        canonical_x() > 40, canonical_x() < -40)
    assert visible[far].mean() < 0.1
    assert visible[near].mean() > 0.95
    assert 0.4 < visible.mean() < 0.75


def test_nose_hides_the_cheek_behind_it() -> None:
    # At 45 degrees some vertices beside the nose face the camera but lie behind the nose:
    # only the depth test catches them, and they are on the far side.
    vertices, triangles = posed(yaw=45), load_canonical_face().triangles
    facing = facing_camera(vertices, triangles)
    hidden = occluded(vertices, triangles, candidates=facing)
    assert hidden.sum() >= 10
    assert (canonical_x()[hidden] < 0).all()
    assert not (visible_vertices(vertices, triangles) & hidden).any()


def test_head_tilted_up_still_shows_most_of_the_face() -> None:
    # Seen from below (head up 40 degrees) the underside of the nose faces the camera.
    face = load_canonical_face()
    level = visible_vertices(posed(), face.triangles)
    up = visible_vertices(posed(pitch=40), face.triangles)
    assert level.mean() > 0.98 and up.mean() > 0.9


def test_mesh_behind_the_camera_is_hidden() -> None:
    vertices = posed(distance_mm=-600)
    assert not visible_vertices(vertices, load_canonical_face().triangles).any()
    assert not visible_vertices(np.full((468, 3), np.nan),
                                load_canonical_face().triangles).any()


@pytest.mark.slow
def test_api_returns_visibility_flags(client: httpx.Client) -> None:
    response = client.post("/v1/faces", content=encode(astronaut()),
                           headers={"Content-Type": "image/jpeg"},
                           params={"include": "visibility"})
    assert response.status_code == 200, response.text
    (face,) = response.json()["images"][0]["faces"]
    flags = face["visibility"]
    assert len(flags["vertices"]) == 468 and len(flags["landmarks68"]) == 68
    assert all(isinstance(flag, bool) for flag in flags["vertices"] + flags["landmarks68"])
    landmarks68 = load_canonical_face().landmarks68
    assert flags["landmarks68"] == [flags["vertices"][i] for i in landmarks68]
    assert np.mean(flags["vertices"]) > 0.85  # a near-frontal face
    without = client.post("/v1/faces", content=encode(astronaut()),
                          headers={"Content-Type": "image/jpeg"}).json()
    assert "visibility" not in without["images"][0]["faces"][0]


@pytest.mark.slow
def test_grpc_carries_the_same_flags(client: httpx.Client, grpc_target: str) -> None:
    data = encode(astronaut())
    rest = client.post("/v1/faces", content=data, headers={"Content-Type": "image/jpeg"},
                       params={"include": "visibility"}).json()["images"][0]
    with GrpcClient(grpc_target) as rpc:
        (entry,) = rpc.estimate([data], include=["visibility"])
    assert entry["faces"][0]["visibility"] == rest["faces"][0]["visibility"]


@pytest.mark.slow
@pytest.mark.aflw
@pytest.mark.skipif(not (AFLW_DEV / "labels.npz").exists(),
                    reason=f"{AFLW_DEV} is not on this machine")
def test_photo_of_a_turned_face_hides_its_far_side(client: httpx.Client) -> None:
    """The most turned faces of the development set whose yaw the service gets right: most
    of the far half of the face is hidden, most of the near half seen."""
    labels = np.load(AFLW_DEV / "labels.npz")
    yaw_labels = np.degrees(labels["pose_para"][:, 1])
    checked = 0
    for index in np.argsort(-np.abs(yaw_labels)):
        if not 45 < abs(yaw_labels[index]) < 70:
            continue
        data = (AFLW_DEV / "images" / f"{labels['name'][index]}.jpg").read_bytes()
        body = client.post("/v1/faces", content=data, headers={"Content-Type": "image/jpeg"},
                           params={"include": "visibility", "max_faces": 1}).json()
        faces = body["images"][0]["faces"]
        if not faces or abs(faces[0]["pose"]["euler_deg"]["yaw"] - yaw_labels[index]) > 10:
            continue
        visible = np.array(faces[0]["visibility"]["vertices"])
        right_side_away = yaw_labels[index] > 0  # the subject's right (x < 0) turns away
        far = canonical_x() < -30 if right_side_away else canonical_x() > 30
        near = canonical_x() > 30 if right_side_away else canonical_x() < -30
        assert visible[far].mean() < 0.3, labels["name"][index]
        assert visible[near].mean() > 0.8, labels["name"][index]
        checked += 1
        if checked == 3:
            break
    assert checked >= 1
