"""The same answer however it is asked for: the in-process API (service.clients.local.FacePose), the
one-shot CLI (`facepose estimate`), and /v1/faces over real HTTP with a raw body, a multipart
body and a JSON body of base64 images; and what each refuses."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from service.clients.local import FacePose
from service.errors import BadOption
from tests.conftest import REPO
from tests.images import astronaut, encode

OPTIONS = {"include": "landmarks68,iris", "quality": "accurate", "fx": 650.0}
JPEG = {"Content-Type": "image/jpeg"}


@pytest.fixture(scope="module")
def facepose() -> Iterator[FacePose]:
    with FacePose() as opened:
        yield opened


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("local") / "astronaut.jpg"
    path.write_bytes(encode(astronaut()))
    return path


def json_body(*images: bytes) -> dict[str, Any]:
    return {"images": [{"data": base64.b64encode(data).decode()} for data in images]}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", "estimate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_every_way_of_asking_gives_the_same_answer(facepose: FacePose, client: httpx.Client,
                                                   photo: Path) -> None:
    data = photo.read_bytes()
    local = facepose.estimate([photo], **OPTIONS)
    raw = client.post("/v1/faces", content=data, headers=JPEG, params=OPTIONS)
    multipart = client.post("/v1/faces", files=[("images", ("a.jpg", data, "image/jpeg"))],
                            params=OPTIONS)
    as_json = client.post("/v1/faces", json=json_body(data), params=OPTIONS)
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in OPTIONS.items()]
    ran = cli(str(photo), *flags)
    assert ran.returncode == 0, ran.stderr
    answers = [raw.json(), multipart.json(), as_json.json(), json.loads(ran.stdout)]
    assert all(answer == local for answer in answers)
    (face,) = local["images"][0]["faces"]
    assert len(face["landmarks68"]) == 68 and face["iris"] and local["images"][0]["camera"][
        "fx"] == 650.0


def test_the_api_takes_bytes_paths_and_boxes(facepose: FacePose, photo: Path) -> None:
    data = photo.read_bytes()
    by_path, by_bytes = (facepose.estimate([image])["images"][0] for image in (photo, data))
    assert by_path == by_bytes
    box = by_path["faces"][0]["box"]
    given = facepose.estimate([data, data], boxes=[[box], None])["images"]
    assert given[0]["faces"][0]["score"] == 1.0  # the client's box
    assert given[1]["faces"] == by_path["faces"]  # None: the detector
    # NumPy boxes and tuples pass the same checks; so does a box that is not one fail.
    as_array = facepose.estimate([data], boxes=[np.array([box], np.float32)])["images"]
    assert as_array[0]["faces"][0]["box"] == pytest.approx(given[0]["faces"][0]["box"],
                                                           abs=1e-3)
    with pytest.raises(BadOption, match=r"boxes\[0\]"):
        facepose.estimate([data], boxes=[[(1, 2, 3)]])
    with pytest.raises(BadOption):
        facepose.estimate([data], quality="best")
    with pytest.raises(BadOption):
        facepose.estimate([data], colour="red")
    drawn = cv2.imdecode(np.frombuffer(facepose.render(data), np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape[:2] == (512, 512)


def test_one_bad_image_in_a_json_body_fails_only_its_own_entry(client: httpx.Client) -> None:
    good = encode(astronaut())
    response = client.post("/v1/faces", json=json_body(good, b"not an image", b""))
    assert response.status_code == 200
    images = response.json()["images"]
    assert len(images[0]["faces"]) == 1
    assert images[1]["error"]["code"] == "unsupported_image"
    assert images[2]["error"]["code"] == "empty_image"
    drawn = client.post("/v1/render", json=json_body(good))
    assert drawn.status_code == 200 and drawn.headers["content-type"].startswith("image/")


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"{not json", 400, "bad_request"),
    (b"[]", 400, "bad_request"),
    (b'{"images": []}', 400, "bad_request"),
    (b'{"images": [{"data": 3}]}', 400, "bad_request"),
    (b'{"images": [{"data": "aGk="}], "extra": 1}', 400, "bad_request"),
    (b'{"images": [{"data": "not base64!"}]}', 400, "bad_request"),
    (b'{"images": [{"data": "\xc3\xa9"}]}', 400, "bad_request"),
    (json.dumps({"images": [{"data": "aGk="}] * 33}).encode(), 413, "too_many_images"),
])
def test_a_malformed_json_body_is_refused(client: httpx.Client, body: bytes, status: int,
                                          code: str) -> None:
    response = client.post("/v1/faces", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_the_cli_reports_each_file_and_fails_when_none_succeeds(photo: Path,
                                                                tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    missing = tmp_path / "missing.jpg"
    ran = cli(str(photo), str(bad), str(missing), "--render", str(tmp_path / "drawn"))
    assert ran.returncode == 0, ran.stderr
    images = json.loads(ran.stdout)["images"]
    assert [image["index"] for image in images] == [0, 1, 2]
    assert len(images[0]["faces"]) == 1
    assert images[1]["error"]["code"] == "unsupported_image"
    assert images[2]["error"]["code"] == "unreadable_file"
    assert "[3/3]" in ran.stderr  # progress on stderr, the JSON alone on stdout
    assert cv2.imread(str(tmp_path / "drawn" / "astronaut.jpg")) is not None
    failed = cli(str(bad), str(missing))
    assert failed.returncode == 1
    assert all(image["error"] for image in json.loads(failed.stdout)["images"])
    refused = cli(str(photo), "--quality", "best")
    assert refused.returncode == 2 and "bad_option" in refused.stderr


def test_openapi_documents_all_three_body_forms(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    for route in ("/v1/faces", "/v1/render"):
        content = document["paths"][route]["post"]["requestBody"]["content"]
        assert {"image/jpeg", "multipart/form-data", "application/json"} <= set(content), route
        item = content["application/json"]["schema"]["properties"]["images"]["items"]
        assert item["properties"]["data"]["format"] == "byte"
