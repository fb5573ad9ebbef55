"""A client's boxes: each face says which box it came from, a box whose face is dropped comes
back as a dropped entry with its reason (REST, gRPC, the Python API and the CLI alike), and
intrinsics that cannot describe the image are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.clients import GrpcClient
from service.clients.local import FacePose
from service.http.schemas import FacesResponse
from tests.conftest import REPO
from tests.images import astronaut, encode

JPEG = {"Content-Type": "image/jpeg"}
# The astronaut's face, and a patch of her suit with no face in it.
FACE_BOX = [178.0, 81.0, 272.0, 175.0]
SUIT_BOX = [380.0, 380.0, 480.0, 480.0]


def faces_with_boxes(client: httpx.Client, boxes: list[list[float]], **params: Any
                     ) -> dict[str, Any]:
    response = client.post("/v1/faces", content=encode(astronaut()), headers=JPEG,
                           params={"boxes": json.dumps([boxes]), **params})
    assert response.status_code == 200, response.text
    FacesResponse.model_validate(response.json())
    (image,) = response.json()["images"]
    return dict(image)


def test_each_face_names_its_box_and_a_dropped_box_says_why(client: httpx.Client) -> None:
    image = faces_with_boxes(client, [SUIT_BOX, FACE_BOX])
    (face,) = image["faces"]
    assert face["box_index"] == 1 and face["box"] == FACE_BOX
    (dropped,) = image["dropped_boxes"]
    assert dropped["box_index"] == 0 and dropped["reason"] == "min_presence"
    assert "presence" in dropped["message"]
    # Boxes past max_faces are dropped for it, not silently.
    image = faces_with_boxes(client, [FACE_BOX, SUIT_BOX, FACE_BOX], max_faces=1)
    assert [f["box_index"] for f in image["faces"]] == [0]
    assert [(d["box_index"], d["reason"]) for d in image["dropped_boxes"]] == [
        (1, "max_faces"), (2, "max_faces")]
    # A face the detector found came from no box.
    detected = client.post("/v1/faces", content=encode(astronaut()), headers=JPEG).json()
    assert detected["images"][0]["faces"][0]["box_index"] is None
    assert detected["images"][0]["dropped_boxes"] == []


def test_max_uncertainty_drops_a_box_with_its_reason(client: httpx.Client) -> None:
    image = faces_with_boxes(client, [FACE_BOX], max_uncertainty_deg=0.01)
    assert image["faces"] == []
    (dropped,) = image["dropped_boxes"]
    assert (dropped["box_index"], dropped["reason"]) == (0, "max_uncertainty_deg")


def test_grpc_faces_name_their_boxes_too(grpc_target: str) -> None:
    with GrpcClient(grpc_target) as rpc:
        (entry,) = rpc.estimate([encode(astronaut())], boxes=[[SUIT_BOX, FACE_BOX]])
        (detected,) = rpc.estimate([encode(astronaut())])
    assert [face["box_index"] for face in entry["faces"]] == [1]
    assert [(d["box_index"], d["reason"]) for d in entry["dropped_boxes"]] == [
        (0, "min_presence")]
    assert detected["faces"][0]["box_index"] is None and detected["dropped_boxes"] == []


def test_the_python_api_and_cli_take_boxes(tmp_path: Path) -> None:
    path = tmp_path / "astronaut.jpg"
    path.write_bytes(encode(astronaut()))
    with FacePose() as facepose:
        local = facepose.estimate([path], boxes=[[SUIT_BOX, FACE_BOX]])
    ran = subprocess.run([sys.executable, "-m", "service.cli", "estimate", str(path),
                          "--boxes", json.dumps([[SUIT_BOX, FACE_BOX]])], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == local
    assert [face["box_index"] for face in local["images"][0]["faces"]] == [1]


@pytest.mark.parametrize("params", [{"cx": 99999}, {"cy": -5000}, {"cx": 2000},
                                    {"fx": 40}, {"cx": 99999, "fx": 500}])
def test_intrinsics_that_cannot_describe_the_image_are_refused(client: httpx.Client,
                                                              params: dict[str, float]) -> None:
    response = client.post("/v1/faces", content=encode(astronaut()), headers=JPEG,
                           params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_option"
    assert "512x512" in error["message"] and "optical axis" in error["message"]


@pytest.mark.parametrize("params", [{"cx": -5}, {"cx": 600, "cy": 0}, {"cx": 0, "cy": 0},
                                    {"fx": 3500, "cx": -1600}])
def test_a_principal_point_off_centre_or_outside_a_crop_is_a_camera(
        client: httpx.Client, params: dict[str, float]) -> None:
    """A crop of a larger photo keeps that photo's principal point, outside the crop."""
    response = client.post("/v1/faces", content=encode(astronaut()), headers=JPEG,
                           params=params)
    assert response.status_code == 200, response.text
    camera = response.json()["images"][0]["camera"]
    assert all(camera[name] == value for name, value in params.items())
    assert len(response.json()["images"][0]["faces"]) == 1
