"""pose.uncertainty_deg: what it is made of, that a pose the mesh got right is left exact, and
that it travels over every transport and filters with max_uncertainty_deg."""

from __future__ import annotations

import json

import grpc
import httpx
import numpy as np
import pytest
import websocket

from scripts.eval_aflw2000 import evaluate
from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from service.pipeline.solve import (
    Camera,
    euler_pitch_yaw_roll_deg,
    face_pose,
    load_canonical_face,
    rotation_from_euler_deg,
)
from service.pipeline.uncertainty import (
    FEATURES,
    angle_apart_deg,
    expected_error_deg,
    feature_matrix,
    fit_uncertainty_model,
    uncertainty_deg,
)
from tests.conftest import SHARED_DATA
from tests.images import astronaut, encode
from tests.test_stream_api import send_json_frame

CAMERA = Camera(fx=800.0, fy=800.0, cx=320.0, cy=240.0, source="request")
JPEG = {"Content-Type": "image/jpeg"}


def projected(points_mm: np.ndarray, rotation: np.ndarray, translation: np.ndarray
              ) -> np.ndarray:
    camera_points = points_mm @ rotation.T + translation
    pixels = camera_points @ CAMERA.matrix.T
    return pixels[:, :2] / pixels[:, 2:]


@pytest.mark.parametrize(("pitch", "yaw", "roll"), [(0, 0, 0), (10, -35, 5), (-15, 60, -10),
                                                    (5, 75, 0)])
def test_a_pose_the_mesh_got_right_comes_back_exact(pitch: float, yaw: float,
                                                    roll: float) -> None:
    """A synthetic projection of the canonical face (mesh and keypoints), through the whole
    solve step with its keypoint blend: the pose exact, its fits agreeing."""
    face = load_canonical_face()
    rotation = rotation_from_euler_deg(pitch, yaw, roll)
    translation = np.array([20.0, -10.0, 600.0])
    pose = face_pose(projected(face.vertices_mm, rotation, translation),
                     projected(face.keypoints_mm, rotation, translation), 1.0, face, CAMERA)
    assert np.allclose(euler_pitch_yaw_roll_deg(pose.r_cam_from_model), (pitch, yaw, roll),
                       atol=0.1)
    assert angle_apart_deg(pose.evidence.from_mesh, pose.evidence.from_keypoints) < 0.1
    assert pose.evidence.from_mirror is None
    assert 0.0 < uncertainty_deg(pose, 1.0, 200.0, "balanced") < 90.0


def test_more_turned_and_less_present_faces_are_less_sure() -> None:
    face = load_canonical_face()
    translation = np.array([0.0, 0.0, 600.0])
    stated = {}
    for yaw in (0, 40, 70):
        rotation = rotation_from_euler_deg(0, yaw, 0)
        pose = face_pose(projected(face.vertices_mm, rotation, translation),
                         projected(face.keypoints_mm, rotation, translation), 1.0, face, CAMERA)
        stated[yaw] = uncertainty_deg(pose, 1.0, 200.0, "balanced")
        assert uncertainty_deg(pose, 0.3, 200.0, "balanced") > stated[yaw]
    assert stated[0] < stated[40] < stated[70]


def test_the_fit_recovers_a_known_log_linear_error() -> None:
    rng = np.random.default_rng(0)
    count = 4000
    features = feature_matrix(rng.uniform(0, 90, count), rng.uniform(0, 20, count),
                              np.where(rng.random(count) < 0.5, np.nan, rng.uniform(0, 20, count)),
                              rng.uniform(0.3, 1, count), rng.uniform(0.01, 0.1, count),
                              rng.uniform(40, 400, count))
    weights = np.array([1.5, 0.3, 0.2, 0.1, 0.8, 0.3, 0.2])
    error = np.exp(features @ weights - 0.5 + rng.normal(0, 0.3, count))
    model = fit_uncertainty_model(features, error)
    assert len(model.weights) == len(FEATURES)
    assert np.allclose(model.weights, weights, atol=0.08)
    # Calibrated in the mean: the stated errors average the actual ones.
    assert expected_error_deg(model, features).mean() == pytest.approx(error.mean(), rel=1e-6)


def faces(client: httpx.Client, **params: object) -> list[dict[str, object]]:
    response = client.post("/v1/faces", content=encode(astronaut()), headers=JPEG,
                           params=params)
    assert response.status_code == 200, response.text
    return response.json()["images"][0]["faces"]


def test_every_face_states_its_uncertainty_and_can_be_filtered(client: httpx.Client) -> None:
    (face,) = faces(client)
    stated = face["pose"]["uncertainty_deg"]
    assert 0.5 < stated < 10.0  # a frontal, well-lit face
    assert faces(client, max_uncertainty_deg=stated + 0.1) == [face]
    assert faces(client, max_uncertainty_deg=stated / 2) == []
    for bad in ("0", "-1", "x", "nan"):
        refused = client.post("/v1/faces", content=encode(astronaut()), headers=JPEG,
                              params={"max_uncertainty_deg": bad})
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["code"] == "bad_option"


def test_grpc_and_streams_carry_it_too(client: httpx.Client, server_url: str,
                                       grpc_target: str) -> None:
    (rest_face,) = faces(client)
    stated = rest_face["pose"]["uncertainty_deg"]
    with grpc.insecure_channel(grpc_target) as channel:
        stub = pb_grpc.FacePoseStub(channel)
        image = pb.Image(data=encode(astronaut()))
        reply = stub.Estimate(pb.EstimateRequest(images=[image]), timeout=30)
        assert reply.results[0].faces[0].pose.uncertainty_deg == pytest.approx(stated, abs=0.01)
        filtered = stub.Estimate(pb.EstimateRequest(
            images=[image], options=pb.Options(max_uncertainty_deg=stated / 2)), timeout=30)
        assert len(filtered.results[0].faces) == 0
    stream = websocket.create_connection(server_url.replace("http://", "ws://") + "/v1/stream",
                                         timeout=60)
    try:
        send_json_frame(stream, encode(astronaut()), "a")
        (tracked,) = json.loads(stream.recv())["faces"]
        assert 0.5 < tracked["pose"]["uncertainty_deg"] < 10.0
    finally:
        stream.close()


AFLW_DEV = SHARED_DATA / "aflw2000-dev"


@pytest.mark.skipif(not (AFLW_DEV / "labels.npz").exists(),
                    reason=f"{AFLW_DEV} is not on this machine")
def test_the_stated_uncertainty_ranks_the_actual_error(client: httpx.Client) -> None:
    """On the small dev set's 98 faces (the issue's 0.5 and 1.5x are checked on the large set,
    held out, by scripts/fit_pose_calibration.py): the ranks agree, and the fifth it trusts
    least is far worse than the fifth it trusts most."""
    result = evaluate(client, AFLW_DEV, "detect")
    assert result["uncertainty_spearman"] >= 0.4
    fifths = result["uncertainty_fifths"]
    assert fifths[-1][1] > 2 * fifths[0][1]
    for stated, actual in fifths:
        assert actual <= max(2.0 * stated, stated + 3.0)
