"""What a browser or a script sends beyond the plain cases: a JSON body with each image's boxes
beside its data, base64 as a data URL, and request heads larger than the server reads, which get
the JSON error shape with 414 or 431 and a close the client can read the answer before."""

from __future__ import annotations

import base64
import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from service.http.connections import MAX_HEAD_BYTES
from tests.images import astronaut, encode
from tests.test_client_boxes import FACE_BOX, SUIT_BOX


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_json_body_carries_each_images_boxes(client: httpx.Client) -> None:
    data = encode(astronaut())
    body = {"images": [{"data": b64(data), "boxes": [SUIT_BOX, FACE_BOX]},
                       {"data": b64(data)},
                       {"data": b64(data), "boxes": None}]}
    response = client.post("/v1/faces", json=body)
    assert response.status_code == 200, response.text
    given, detected, also_detected = response.json()["images"]
    assert [face["box_index"] for face in given["faces"]] == [1]
    assert [d["box_index"] for d in given["dropped_boxes"]] == [0]
    assert detected["faces"][0]["box_index"] is None
    assert also_detected["faces"] == detected["faces"]
    # The same boxes in the query give the same answer.
    query = client.post("/v1/faces", json={"images": [{"data": b64(data)}]},
                        params={"boxes": json.dumps([[SUIT_BOX, FACE_BOX]])})
    assert query.json()["images"][0] == given


@pytest.mark.parametrize(("body", "words"), [
    ({"images": [{"data": "", "boxes": [[1, 2, 3]]}]}, "images[0].boxes"),
    ({"images": [{"data": "", "boxes": [[10, 10, 5, 5]]}]}, "x1 < x2"),
    ({"images": [{"data": "", "boxes": "[[1, 2, 3, 4]]"}]}, "images[0].boxes"),
])
def test_bad_boxes_in_a_json_body_are_refused(client: httpx.Client, body: dict,
                                              words: str) -> None:
    body["images"][0]["data"] = b64(encode(astronaut()))
    response = client.post("/v1/faces", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "bad_option"
    assert words in response.json()["error"]["message"]


def test_boxes_in_both_the_query_and_the_body_are_refused(client: httpx.Client) -> None:
    body = {"images": [{"data": b64(encode(astronaut())), "boxes": [FACE_BOX]}]}
    response = client.post("/v1/faces", json=body, params={"boxes": json.dumps([[FACE_BOX]])})
    assert response.status_code == 422, response.text
    assert "either" in response.json()["error"]["message"]


@pytest.mark.parametrize("prefix", ["data:image/jpeg;base64,", "data:image/png;base64,",
                                    "data:;base64,", "data:application/octet-stream;base64,"])
def test_a_data_url_is_taken_as_its_base64(client: httpx.Client, prefix: str) -> None:
    data = encode(astronaut())
    plain = client.post("/v1/faces", json={"images": [{"data": b64(data)}]})
    as_url = client.post("/v1/faces", json={"images": [{"data": prefix + b64(data)}]})
    assert as_url.status_code == 200, as_url.text
    assert as_url.json() == plain.json()


def test_a_data_url_that_is_not_base64_is_refused(client: httpx.Client) -> None:
    response = client.post("/v1/faces", json={"images": [{"data": "data:image/jpeg,abc"}]})
    assert response.status_code == 400, response.text
    assert "base64" in response.json()["error"]["message"]


def exchange(base_url: str, request: bytes) -> bytes:
    """Send a whole request, as a client does before it reads, then read to the close."""
    parts = urlsplit(base_url)
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def status_and_error(reply: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)["error"]


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"POST /v1/faces?include=" + b"y" * 2_800_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
     414, "uri_too_long"),
    (b"POST /v1/faces HTTP/1.1\r\nHost: a\r\nX-Big: " + b"z" * (2 * MAX_HEAD_BYTES)
     + b"\r\nContent-Length: 0\r\n\r\n", 431, "headers_too_large"),
    (b"POST /v1/faces HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 20_000 + b"\r\n", 431,
     "headers_too_large"),
    # Whole in one send, and so in one read: h11 alone would take it.
    (b"POST /v1/faces HTTP/1.1\r\nHost: a\r\nX-Big: " + b"z" * 200_000 + b"\r\n\r\n", 431,
     "headers_too_large"),
])
def test_a_head_over_the_limit_gets_json_and_a_readable_close(
        server_url: str, request_bytes: bytes, status: int, code: str) -> None:
    reply = exchange(server_url, request_bytes)
    got_status, headers, error = status_and_error(reply)
    assert (got_status, error["code"]) == (status, code)
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert str(MAX_HEAD_BYTES // 1024) in error["message"]


@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/faces HTTP/1.1\r\nHost a\r\n\r\n",
    # A malformed head with a large body behind it in the same send: malformed, not too large.
    b"POST /v1/faces HTTP/1.1\r\nBad Header\r\nContent-Length: 100000\r\n\r\n"
    + b"x" * 100_000,
])
def test_a_malformed_head_gets_the_json_error_shape(server_url: str,
                                                    request_bytes: bytes) -> None:
    reply = exchange(server_url, request_bytes)
    got_status, headers, error = status_and_error(reply)
    assert (got_status, error["code"]) == (400, "bad_request")
    assert headers["content-type"] == "application/json"
