"""Hostile input: a corpus of broken, lying and oversized requests, generated here (nothing is
committed). Each must get a 4xx with the one error shape, or a 200 whose entries carry their own
errors where that is the contract, and never a 5xx; a decompression bomb is refused from its
header, so the gateway's memory stays flat however often the corpus is sent."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pytest

from service.http.schemas import FacesResponse
from tests.conftest import REPO, SERVER_ENV, free_port, wait_until
from tests.images import astronaut, encode, png_header_only

# An outcome is "200", "STATUS CODE" for a JSON error, or "http STATUS" for a refusal by the
# HTTP server itself (a request line it cannot parse never reaches the application; "http
# reset": it closed the connection without an answer).
OK = "200"
EMPTY = "400 empty_image"
BAD_REQUEST = "400 bad_request"
UNSUPPORTED = "415 unsupported_image"
CORRUPT = "422 corrupt_image"
TOO_LARGE = "413 image_too_large"
BODY_TOO_LARGE = "413 body_too_large"
TOO_MANY = "413 too_many_images"
BAD_OPTION = "422 bad_option"
BROKEN = frozenset({UNSUPPORTED, CORRUPT})
# For a 200, per image: "ok" or the error code of its entry.
ENTRY_OK = "ok"

# Growth allowed over three passes of the corpus, once the gateway is warm.
RSS_GROWTH_LIMIT_MB = 150
# A bomb refused from its header reserves nothing; decoding it would reserve gigabytes.
ADDRESS_SPACE_GROWTH_LIMIT_MB = 4096


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Case:
    """One hostile request: httpx arguments (``raw`` instead: bytes sent as they are on a socket,
    for what a client library refuses to send) and the outcomes it may get."""

    name: str
    allowed: frozenset[str]
    request: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""
    # For a 200: per image, the entry outcomes allowed ("ok" or an error code).
    entries: tuple[frozenset[str], ...] | None = None


def image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data[:4] == b"RIFF":
        return "image/webp"
    return "image/jpeg"


def raw_image(name: str, data: bytes, allowed: frozenset[str] | str,
              entries: tuple[frozenset[str], ...] | None = None, **params: Any) -> Case:
    allowed = frozenset({allowed}) if isinstance(allowed, str) else allowed
    return Case(name, allowed, {"content": data, "headers": {"Content-Type": image_type(data)},
                                "params": params}, entries=entries)


def png_chunk(kind: bytes, payload: bytes, crc: int | None = None) -> bytes:
    body = kind + payload
    return (struct.pack(">I", len(payload)) + body
            + struct.pack(">I", zlib.crc32(body) if crc is None else crc))


def riff_webp(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def webp_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)


def u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def webp_canvas_bomb(width: int, height: int, animated: bool) -> bytes:
    """A few hundred bytes: an extended (VP8X) WebP whose canvas is width x height, holding one
    16x16 image (as an animation frame when ``animated``, which makes the canvas size legal)."""
    frame = encode(np.full((16, 16, 3), 127, np.uint8), ".webp")[12:]  # its VP8/VP8L chunk
    header = bytes([0x02 if animated else 0, 0, 0, 0]) + u24(width - 1) + u24(height - 1)
    if not animated:
        return riff_webp(webp_chunk(b"VP8X", header) + frame)
    anmf = u24(0) + u24(0) + u24(15) + u24(15) + u24(100) + b"\0" + frame
    return riff_webp(webp_chunk(b"VP8X", header) + webp_chunk(b"ANIM", bytes(6))
                     + webp_chunk(b"ANMF", anmf))


def jpeg_declaring(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its baseline SOF0 frame header saying width x height."""
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9:]


def flipped(data: bytes, start: int, end: int, count: int, seed: int) -> bytes:
    """``count`` bytes between start and end XOR-ed with a fixed pattern."""
    out = bytearray(data)
    for index in random.Random(seed).sample(range(start, end), count):
        out[index] ^= 0x5A
    return bytes(out)


def png_with_bad_idat_crc(data: bytes) -> bytes:
    idat = data.find(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4: idat])
    crc_at = idat + 4 + length
    return data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at: crc_at + 4]) + data[crc_at + 4:]


def multipart(parts: list[tuple[bytes, bytes | None, bytes, bytes]],
              boundary: bytes = b"hostile-boundary-7f3a") -> dict[str, Any]:
    """httpx arguments for a hand-made multipart body: (name, filename, content type, data)
    per part, header bytes as given (non-UTF-8 included)."""
    body = b""
    for name, filename, content_type, data in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += (b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
                 + (b"Content-Type: " + content_type + b"\r\n" if content_type else b"")
                 + b"\r\n" + data + b"\r\n")
    body += b"--" + boundary + b"--\r\n"
    return {"content": body,
            "headers": {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}}


def raw_post(target: bytes, body: bytes = b"", content_type: bytes = b"image/jpeg") -> bytes:
    """A whole HTTP/1.1 request as bytes, for request lines no client library would send."""
    return (b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"Content-Type: " + content_type + b"\r\n"
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


@dataclass(frozen=True)
class Chunked:
    """A body httpx sends chunked, with no Content-Length; iterable any number of times."""

    data: bytes
    size: int = 1 << 16

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start: start + self.size]


@cache
def corpus() -> tuple[Case, ...]:
    face = cv2.resize(astronaut(), (160, 160))
    jpeg, png, webp = (encode(face, ext) for ext in (".jpg", ".png", ".webp"))
    cases: list[Case] = []

    # Cut short at several points: inside the magic, the header, the data, before the end.
    for label, data in (("jpeg", jpeg), ("png", png), ("webp", webp)):
        for cut in (2, 9, 40, len(data) // 4, len(data) // 2, len(data) * 9 // 10,
                    len(data) - 2):
            cases.append(raw_image(f"{label} cut at {cut}", data[:cut], BROKEN))
    # Flipped bytes in the entropy-coded data: libjpeg and libwebp may decode garbage pixels
    # without complaint (a 200 is fine then), or refuse.
    scan = jpeg.rfind(b"\xff\xda") + 20
    for seed in range(3):
        cases.append(raw_image(f"jpeg flipped scan bytes {seed}",
                               flipped(jpeg, scan, len(jpeg) - 2, 40, seed),
                               {OK, CORRUPT, UNSUPPORTED}))
        cases.append(raw_image(f"webp flipped bytes {seed}",
                               flipped(webp, 40, len(webp), 40, seed), {OK, CORRUPT}))
    idat = png.find(b"IDAT") + 4
    cases.append(raw_image("png flipped IDAT bytes", flipped(png, idat, idat + 400, 20, 0),
                           {OK, CORRUPT}))
    cases.append(raw_image("png bad IDAT CRC", png_with_bad_idat_crc(png), {OK, CORRUPT}))
    cases.append(raw_image("png bad IHDR CRC", png[:29] + b"\0\0\0\0" + png[33:], BROKEN))
    cases.append(raw_image("png 0x0 header", png_header_only(0, 0), BROKEN))
    cases.append(raw_image("png with only its signature", png[:8], BROKEN))

    # Headers that declare far more pixels than the file holds.
    cases.append(raw_image("png 100000x100000 header", png_header_only(100_000, 100_000),
                           TOO_LARGE))
    cases.append(raw_image("png 2^31-1 square header",
                           png_header_only(2**31 - 1, 2**31 - 1), {TOO_LARGE, CORRUPT}))
    cases.append(raw_image("jpeg SOF 60000x60000", jpeg_declaring(jpeg, 60_000, 60_000),
                           TOO_LARGE))
    cases.append(raw_image("jpeg SOF 65535x65535", jpeg_declaring(jpeg, 65_535, 65_535),
                           TOO_LARGE))
    cases.append(raw_image("webp VP8X animated canvas 60000x60000",
                           webp_canvas_bomb(60_000, 60_000, animated=True), TOO_LARGE))
    cases.append(raw_image("webp VP8X animated canvas 2^24x255",
                           webp_canvas_bomb(1 << 24, 255, animated=True), TOO_LARGE))
    cases.append(raw_image("webp VP8X still canvas 60000x60000",
                           webp_canvas_bomb(60_000, 60_000, animated=False),
                           {TOO_LARGE, CORRUPT}))

    # Nothing, and next to nothing: 1x1 (and one-pixel-thin) images are images with no face.
    cases.append(Case("zero-byte body", frozenset({EMPTY}),
                      {"content": b"", "headers": {"Content-Type": "image/jpeg"}}))
    cases.append(Case("zero-byte octet-stream body", frozenset({EMPTY}),
                      {"content": b"", "headers": {"Content-Type": "application/octet-stream"}}))
    for ext in (".jpg", ".png", ".webp"):
        cases.append(raw_image(f"1x1 {ext}", encode(np.full((1, 1, 3), 200, np.uint8), ext), OK,
                               entries=(frozenset({ENTRY_OK}),)))
    for shape in ((1, 3000), (3000, 1)):
        cases.append(raw_image(f"{shape[1]}x{shape[0]} png",
                               encode(np.full((*shape, 3), 90, np.uint8), ".png"), OK,
                               entries=(frozenset({ENTRY_OK}),)))
    tiny = encode(np.full((1, 1, 3), 200, np.uint8), ".png")
    cases.append(raw_image("1x1 png with a box far outside it", tiny, {OK, BAD_OPTION},
                           boxes="[[[-1e9, -1e9, -999999990, -999999990]]]"))

    # Content types that are not an image's, or none.
    for content_type in ("text/plain", "image/gif", "image/jpeg2000", "multipart/mixed"):
        cases.append(Case(f"jpeg sent as {content_type}", frozenset({UNSUPPORTED}),
                          {"content": jpeg, "headers": {"Content-Type": content_type}}))
    # JSON bodies are read as such: a JPEG is malformed JSON.
    cases.append(Case("jpeg sent as application/json", frozenset({BAD_REQUEST}),
                      {"content": jpeg, "headers": {"Content-Type": "application/json"}}))
    cases.append(Case("jpeg with no Content-Type", frozenset({UNSUPPORTED}), {"content": jpeg}))
    cases.append(Case("png sent as image/jpeg", frozenset({OK}),
                      {"content": png, "headers": {"Content-Type": "image/jpeg"}},
                      entries=(frozenset({ENTRY_OK}),)))
    cases.append(Case("multipart without a boundary", frozenset({BAD_REQUEST}),
                      {"content": jpeg, "headers": {"Content-Type": "multipart/form-data"}}))
    cases.append(Case("multipart with a garbage body", frozenset({BAD_REQUEST}),
                      {"content": b"\xff" * 2000,
                       "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}}))
    cases.append(Case("Content-Type with non-UTF-8 parameters", frozenset({OK, UNSUPPORTED}),
                      raw=raw_post(b"/v1/faces", jpeg, b"image/jpeg; charset=\xff\xfe")))

    # Bodies over the limit, declared or streamed without a length.
    limit = int(SERVER_ENV["FACEPOSE_MAX_BODY_BYTES"])
    big = jpeg + b"\0" * (limit + 1000 - len(jpeg))
    cases.append(Case("chunked image body over the limit", frozenset({BODY_TOO_LARGE}),
                      {"content": Chunked(big), "headers": {"Content-Type": "image/jpeg"}}))
    filler = b"\0" * (int(SERVER_ENV["FACEPOSE_MAX_IMAGE_BYTES"]) - 1000)
    many_big = [("images", (f"{i}.jpg", jpeg + filler, "image/jpeg")) for i in range(4)]
    cases.append(Case("multipart body over the limit", frozenset({BODY_TOO_LARGE}),
                      {"files": many_big}))
    streamed = multipart([(b"images", f"{i}.jpg".encode(), b"image/jpeg", jpeg + filler)
                          for i in range(4)])
    cases.append(Case("chunked multipart body over the limit", frozenset({BODY_TOO_LARGE}),
                      {**streamed, "content": Chunked(streamed["content"])}))

    # Multipart: far more parts than allowed, fields that are not files, bytes that are not
    # UTF-8 in names, file names and values.
    cases.append(Case("200 image parts", frozenset({TOO_MANY}),
                      {"files": [("images", (f"{i}.jpg", tiny, "image/png"))
                                 for i in range(200)]}))
    cases.append(Case("200 image fields that are not files", frozenset({TOO_MANY}),
                      multipart([(b"images", None, b"", b"x")] * 200)))
    cases.append(Case("200 parts of another name", frozenset({BAD_REQUEST, TOO_MANY}),
                      {"files": [("other", (f"{i}.jpg", tiny, "image/png"))
                                 for i in range(200)]}))
    cases.append(Case("images field that is not a file", frozenset({OK}),
                      multipart([(b"images", None, b"", b"not a file")]),
                      entries=(frozenset({"unsupported_image"}),)))
    cases.append(Case("image field holding JPEG bytes, no filename", frozenset({OK}),
                      multipart([(b"images", None, b"", jpeg), (b"images", b"a.png", b"", png)]),
                      entries=(frozenset({ENTRY_OK, "unsupported_image", "corrupt_image"}),
                               frozenset({ENTRY_OK}))))
    cases.append(Case("non-UTF-8 field name only", frozenset({BAD_REQUEST}),
                      multipart([(b"\xff\xfeimages", b"a.png", b"image/png", png)])))
    cases.append(Case("non-UTF-8 file name and value", frozenset({OK}),
                      multipart([(b"images", b"\xff\xfe\x80.png", b"image/png", png),
                                 (b"images", None, b"", b"\xff\xfe\xfd\x80"),
                                 (b"\xc3\x28", None, b"", b"\xff")]),
                      entries=(frozenset({ENTRY_OK}),
                               frozenset({"unsupported_image", "corrupt_image"}))))
    cases.append(Case("multipart bad and empty parts", frozenset({OK}),
                      {"files": [("images", ("a.png", b"", "image/png")),
                                 ("images", ("b.png", png_header_only(100_000, 100_000),
                                             "image/png")),
                                 ("images", ("c.jpg", jpeg[:500], "image/jpeg")),
                                 ("images", ("d.webp", webp_canvas_bomb(60_000, 60_000, True),
                                             "image/webp"))]},
                      entries=(frozenset({"empty_image"}), frozenset({"image_too_large"}),
                               frozenset({"corrupt_image"}), frozenset({"image_too_large"}))))

    # Query options: not UTF-8, very long, deeply nested, huge, not finite, repeated.
    for target in (b"include=%FF%FE", b"boxes=%FF", b"fx=%FF%00", b"max_faces=%C3%28",
                   b"include=mesh%00"):
        cases.append(Case(f"query {target.decode()}", frozenset({BAD_OPTION}),
                          raw=raw_post(b"/v1/faces?" + target, jpeg)))
    cases.append(Case("raw non-UTF-8 bytes in the request line",
                      frozenset({"400 bad_request", BAD_OPTION}),
                      raw=raw_post(b"/v1/faces?include=\xff\xfe", jpeg)))
    # Longer than the HTTP server reads: the JSON error, readable before the close.
    too_long = frozenset({"414 uri_too_long"})
    cases.append(Case("include of 200 kB", too_long,
                      raw=raw_post(b"/v1/faces?include=" + b"y" * 200_000, jpeg)))
    cases.append(Case("boxes nested 100000 deep", too_long,
                      raw=raw_post(b"/v1/faces?boxes=" + b"%5B" * 100_000, jpeg)))
    cases.append(Case("raw non-UTF-8 query key", frozenset({"400 bad_request", OK, BAD_OPTION}),
                      raw=raw_post(b"/v1/faces?\xff=1", jpeg)))
    long_params: list[tuple[str, dict[str, Any], frozenset[str]]] = [
        ("include of 10 kB", {"include": "mesh," * 2000}, frozenset({OK})),
        ("unknown include of 10 kB", {"include": "x" * 10_000}, frozenset({BAD_OPTION})),
        ("include repeated 1000 times", {"include": ["landmarks68"] * 1000}, frozenset({OK})),
        ("boxes nested 3000 deep", {"boxes": "[" * 3000 + "]" * 3000}, frozenset({BAD_OPTION})),
        ("boxes with a 5000-digit number", {"boxes": f"[[[0, 0, {'9' * 5000}, 1]]]"},
         frozenset({BAD_OPTION})),
        ("boxes with 1e400", {"boxes": "[[[0, 0, 1e400, 10]]]"}, frozenset({BAD_OPTION})),
        ("boxes with NaN", {"boxes": "[[[NaN, 0, 10, 10]]]"}, frozenset({BAD_OPTION})),
        ("boxes with -Infinity", {"boxes": "[[[-Infinity, 0, 10, 10]]]"},
         frozenset({BAD_OPTION})),
        ("boxes of 1e300", {"boxes": "[[[0, 0, 1e300, 1e300]]]"}, frozenset({OK, BAD_OPTION})),
        ("boxes of 1e-300", {"boxes": "[[[0, 0, 1e-300, 1e-300]]]"},
         frozenset({OK, BAD_OPTION})),
        ("boxes of 1e15 at -1e15", {"boxes": "[[[-1e15, -1e15, 1e15, 1e15]]]"},
         frozenset({OK, BAD_OPTION})),
        ("boxes: 300 boxes", {"boxes": json.dumps([[[0, 0, 50, 50]] * 300])},
         frozenset({BAD_OPTION, "413 too_many_boxes"})),
        ("a box of one pixel", {"boxes": "[[[50, 50, 51, 51]]]"}, frozenset({OK, BAD_OPTION})),
        ("boxes of booleans", {"boxes": "[[[true, 0, 10, 10]]]"}, frozenset({BAD_OPTION})),
        ("boxes as an object", {"boxes": '{"a": 1}'}, frozenset({BAD_OPTION})),
        ("boxes as a string", {"boxes": '"[[[0,0,1,1]]]"'}, frozenset({BAD_OPTION})),
        ("fx nan", {"fx": "nan"}, frozenset({BAD_OPTION})),
        ("fx inf", {"fx": "inf"}, frozenset({BAD_OPTION})),
        ("fy -Infinity", {"fy": "-Infinity"}, frozenset({BAD_OPTION})),
        ("fx 1e309", {"fx": "1e309"}, frozenset({BAD_OPTION})),
        ("cy NaN", {"cy": "NaN"}, frozenset({BAD_OPTION})),
        ("fx 2e4, a long lens", {"fx": "2e4"}, frozenset({OK})),
        ("fx 1e300", {"fx": "1e300"}, frozenset({OK, BAD_OPTION})),
        ("fx 5e-324", {"fx": "5e-324"}, frozenset({OK, BAD_OPTION})),
        ("cx -1e300", {"cx": "-1e300"}, frozenset({OK, BAD_OPTION})),
        ("cx 1e300 cy 1e300", {"cx": "1e300", "cy": "1e300"}, frozenset({OK, BAD_OPTION})),
        ("fx 1e-300 fy 1e300", {"fx": "1e-300", "fy": "1e300"}, frozenset({OK, BAD_OPTION})),
        ("max_faces 10^30", {"max_faces": str(10**30)}, frozenset({BAD_OPTION})),
        ("max_faces 1.5", {"max_faces": "1.5"}, frozenset({BAD_OPTION})),
        ("max_faces -1", {"max_faces": "-1"}, frozenset({BAD_OPTION})),
        ("min_score nan", {"min_score": "nan"}, frozenset({BAD_OPTION})),
        ("min_presence -inf", {"min_presence": "-inf"}, frozenset({BAD_OPTION})),
        ("max_faces repeated", {"max_faces": ["1", "40"]}, frozenset({OK, BAD_OPTION})),
        ("fx repeated, one nan", {"fx": ["500", "nan"]}, frozenset({OK, BAD_OPTION})),
        ("include repeated, one unknown", {"include": ["mesh", "bogus"]},
         frozenset({BAD_OPTION})),
        ("boxes repeated", {"boxes": ["[[[0, 0, 80, 80]]]", "[[[0,0,1"]},
         frozenset({OK, BAD_OPTION})),
        ("every option twice", {"include": ["iris", "mesh"], "min_score": ["0.1", "0.9"],
                                "min_presence": ["0", "1"], "cx": ["1", "2"]},
         frozenset({OK, BAD_OPTION})),
    ]
    for name, params, allowed in long_params:
        cases.append(Case(name, allowed, {"content": jpeg,
                                          "headers": {"Content-Type": "image/jpeg"},
                                          "params": params}))

    # Other routes and methods.
    cases.append(Case("GET /v1/faces", frozenset({"405 method_not_allowed"}),
                      {"method": "GET"}))
    cases.append(Case("POST /v1/mesh/topology", frozenset({"405 method_not_allowed"}),
                      {"url": "/v1/mesh/topology", "content": jpeg}))
    cases.append(Case("POST /v1/faces/../../etc/passwd", frozenset({"404 not_found"}),
                      raw=raw_post(b"/v1/faces/../../etc/passwd", jpeg)))
    return tuple(cases)


def send_raw(base_url: str, data: bytes) -> Reply:
    """Status 0: the HTTP server dropped the connection without an answer (what it may do to a
    request line longer than it reads)."""
    parts = urlsplit(base_url)
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            if not received:
                return Reply(0, "", b"")
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
    return Reply(int(lines[0].split()[1]), headers.get("content-type", ""), body)


def send(http: httpx.Client, case: Case) -> Reply:
    if case.raw:
        return send_raw(str(http.base_url), case.raw)
    args = dict(case.request)
    method, url = args.pop("method", "POST"), args.pop("url", "/v1/faces")
    # A fresh connection each: no case can leave one behind in a state that fails the next.
    args["headers"] = {**args.get("headers", {}), "Connection": "close"}
    response = http.request(method, url, **args)
    return Reply(response.status_code, response.headers.get("content-type", ""),
                 response.content)


def check(case: Case, reply: Reply) -> None:
    """Never a 5xx; a JSON error has the one shape; the outcome is one the case allows."""
    summary = f"{case.name}: {reply.status} {reply.body[:300]!r}"
    assert reply.status < 500, summary
    if reply.status == 0:
        outcome = "http reset"
    elif reply.status >= 400 and not reply.content_type.startswith("application/json"):
        outcome = f"http {reply.status}"  # refused by the HTTP server before the application
    elif reply.status >= 400:
        body = json.loads(reply.body)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, summary
        assert isinstance(body["error"]["code"], str) and body["error"]["code"], summary
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], summary
        outcome = f"{reply.status} {body['error']['code']}"
    else:
        assert reply.status == 200, summary
        outcome = OK
    assert outcome in case.allowed, f"{summary}; allowed: {sorted(case.allowed)}"
    if outcome != OK:
        return
    images = FacesResponse.model_validate_json(reply.body).images
    if case.entries is not None:
        assert [image.index for image in images] == list(range(len(case.entries))), summary
        for image, allowed in zip(images, case.entries, strict=True):
            got = ENTRY_OK if image.error is None else image.error.code
            assert got in allowed, f"{summary}; entry {image.index}: {got} not in {allowed}"
            if image.error is not None:
                assert image.error.message and image.faces == [], summary


@pytest.mark.parametrize("case", corpus(), ids=[case.name for case in corpus()])
def test_hostile_request_gets_a_4xx_or_its_contract(client: httpx.Client, case: Case) -> None:
    check(case, send(client, case))


def test_one_pixel_images_have_no_faces(client: httpx.Client) -> None:
    for ext in (".jpg", ".png", ".webp"):
        data = encode(np.full((1, 1, 3), 200, np.uint8), ext)
        response = client.post("/v1/faces", content=data,
                               headers={"Content-Type": image_type(data)})
        assert response.status_code == 200, response.text
        (image,) = response.json()["images"]
        assert (image["width"], image["height"], image["faces"], image["error"]) == (
            1, 1, [], None)


def test_long_lens_keeps_its_face(client: httpx.Client) -> None:
    """A focal length far beyond the default (a telephoto shot: the face spans a small angle) is
    a camera, not an attack: the face is still found and only moves away."""
    depths = []
    for fx in (1_000, 20_000, 50_000):
        response = client.post("/v1/faces", content=encode(astronaut()), params={"fx": fx},
                               headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text
        faces = response.json()["images"][0]["faces"]
        assert len(faces) == 1, f"fx={fx}: {len(faces)} faces"
        depths.append(faces[0]["pose"]["translation_mm"][2])
    assert depths[1] / depths[0] == pytest.approx(20, rel=0.1)
    assert depths[2] / depths[0] == pytest.approx(50, rel=0.1)


# Memory: a gateway of our own, whose process id is known. The tests below run in file order on
# it: each one's peaks must not be masked by an earlier one's.


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now), VmHWM (resident peak) and VmPeak (address space peak), KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmPeak"):
                values[key] = int(value.split()[0])
    return values


@dataclass
class OwnGateway:
    url: str
    pid: int


@pytest.fixture(scope="module")
def own_gateway() -> Iterator[OwnGateway]:
    port = free_port()
    env = {**os.environ, **SERVER_ENV, "FACEPOSE_GRPC_PORT": "0", "FACEPOSE_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host",
                                "127.0.0.1"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(f"{url}/readyz", process)
        yield OwnGateway(url, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("bomb", [
    pytest.param(png_header_only(100_000, 100_000), id="png-100000x100000"),
    pytest.param(jpeg_declaring(encode(astronaut()), 60_000, 60_000), id="jpeg-60000x60000"),
    pytest.param(webp_canvas_bomb(65_535, 65_535, animated=True), id="webp-65535x65535"),
])
def test_bomb_header_reserves_no_memory(own_gateway: OwnGateway, bomb: bytes) -> None:
    """Refused from the header alone: not even address space is reserved for the pixels (a
    decoder that allocates its canvas up front fails where memory is not overcommitted)."""
    with httpx.Client(base_url=own_gateway.url, timeout=60) as http:
        before = memory_kib(own_gateway.pid)
        response = http.post("/v1/faces", content=bomb,
                             headers={"Content-Type": image_type(bomb)})
        after = memory_kib(own_gateway.pid)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "image_too_large"
    grown = (after["VmPeak"] - before["VmPeak"]) / 1024
    assert grown < ADDRESS_SPACE_GROWTH_LIMIT_MB, f"address space peak grew by {grown:.0f} MiB"


@pytest.mark.slow
def test_corpus_three_times_leaves_memory_flat(own_gateway: OwnGateway) -> None:
    with httpx.Client(base_url=own_gateway.url, timeout=60) as http:
        # Warm up: the first inference sizes the runtime's buffers; pass the corpus once so
        # every code path has run and its one-time allocations are made. (Whether each answer
        # is right is the test above's business; this one is about memory.)
        warm = http.post("/v1/faces", content=encode(astronaut()),
                         headers={"Content-Type": "image/jpeg"})
        assert warm.status_code == 200, warm.text
        fresh = memory_kib(own_gateway.pid)
        for case in corpus():
            send(http, case)
        before = memory_kib(own_gateway.pid)
        for _ in range(3):
            for case in corpus():
                send(http, case)
        after = memory_kib(own_gateway.pid)
        assert http.get("/readyz").status_code == 200
    print(f"\ngateway memory over {len(corpus())} cases, MiB, after one image / the warm-up "
          f"pass / three more passes: RSS {fresh['VmRSS'] / 1024:.0f} / "
          f"{before['VmRSS'] / 1024:.0f} / {after['VmRSS'] / 1024:.0f}; resident peak "
          f"{fresh['VmHWM'] / 1024:.0f} / {before['VmHWM'] / 1024:.0f} / "
          f"{after['VmHWM'] / 1024:.0f}")
    assert (after["VmRSS"] - before["VmRSS"]) / 1024 < RSS_GROWTH_LIMIT_MB, (before, after)
    assert (after["VmHWM"] - before["VmHWM"]) / 1024 < RSS_GROWTH_LIMIT_MB, (before, after)


@pytest.mark.slow
def test_streamed_multipart_is_held_to_the_body_limit(own_gateway: OwnGateway) -> None:
    """A multipart body sent chunked (no Content-Length to check up front) is cut off at the
    body limit as it arrives, not read whole into memory: 8 parts of 40 MiB each."""
    part = 40 << 20
    header = (b'--b0undary\r\nContent-Disposition: form-data; name="images"; '
              b'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n')

    def body() -> Iterator[bytes]:
        for _ in range(8):
            yield header + b"\xff\xd8\xff"
            for _ in range(part >> 20):
                yield bytes(1 << 20)
            yield b"\r\n"
        yield b"--b0undary--\r\n"

    before = memory_kib(own_gateway.pid)
    try:
        response = httpx.post(f"{own_gateway.url}/v1/faces", content=body(), timeout=120,
                              headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError):
        response = None  # refused mid-body, the connection closed: as good as a 413
    after = memory_kib(own_gateway.pid)
    if response is not None:
        assert response.status_code == 413, response.text[:300]
        assert response.json()["error"]["code"] == "body_too_large"
    grown = (after["VmHWM"] - before["VmHWM"]) / 1024
    assert grown < RSS_GROWTH_LIMIT_MB, f"resident peak grew by {grown:.0f} MiB"
