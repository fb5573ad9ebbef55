"""Video streams over a real WebSocket (and real gRPC) against a real gateway process."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import re
import struct
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
import websocket

from service.app.admission import MemoryBudget
from service.app.streams import FrameDone, FrameIn, InThread, Outgoing, StreamRunner
from service.config import Settings
from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from service.http.websocket import StreamErrorMessage, StreamFrameOut
from service.runtime import create_runtime
from tests.conftest import free_port, gateway
from tests.video import Video, synthetic_video

pytestmark = pytest.mark.slow
API_KEY = "stream-test-key"


@pytest.fixture(scope="module")
def video() -> Video:
    return synthetic_video(frames=30)


@pytest.fixture(scope="module")
def limited_grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def limited_url(limited_grpc_port: int) -> Iterator[str]:
    """A gateway taking one stream at a time, idle after 1.5 s, with API keys on."""
    with gateway({"FACEPOSE_STREAM_MAX_STREAMS": "1", "FACEPOSE_STREAM_IDLE_TIMEOUT_S": "1.5",
                  "FACEPOSE_API_KEYS": API_KEY,
                  "FACEPOSE_GRPC_PORT": str(limited_grpc_port)}) as url:
        yield url


def connect(url: str, headers: list[str] | None = None) -> websocket.WebSocket:
    return websocket.create_connection(url.replace("http://", "ws://") + "/v1/stream",
                                       timeout=60, header=headers or [])


def send_json_frame(ws: websocket.WebSocket, data: bytes, frame_id: Any = None,
                    timestamp_ms: float | None = None) -> None:
    ws.send(json.dumps({"type": "frame", "id": frame_id, "timestamp_ms": timestamp_ms,
                        "image": base64.b64encode(data).decode()}))


def send_binary_frame(ws: websocket.WebSocket, data: bytes, header: dict[str, Any]) -> None:
    encoded = json.dumps(header).encode()
    ws.send_binary(struct.pack(">I", len(encoded)) + encoded + data)


def until_closed(ws: websocket.WebSocket) -> tuple[list[dict[str, Any]], int, str]:
    """The messages the server sends until it closes, its close code and reason."""
    messages = []
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack(">H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
            ws.shutdown()
            return messages, code, frame.data[2:].decode()
        if opcode == websocket.ABNF.OPCODE_TEXT:
            messages.append(json.loads(frame.data))


def streams_open(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = re.findall(r'^facepose_streams_open\{transport="(\w+)"\} (\S+)$', text, re.M)
    return sum(float(value) for _, value in values)


def wait_for_streams_open(url: str, expected: float, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (value := streams_open(url)) != expected:
        assert time.monotonic() < deadline, f"{value} streams open, expected {expected}"
        time.sleep(0.1)


def test_stream_keeps_one_track_id_and_a_bad_frame_fails_alone(server_url: str,
                                                                 video: Video) -> None:
    ws = connect(server_url)
    ws.send(json.dumps({"type": "config", "config": {
        "include": ["landmarks68", "mesh"], "detect_every": 10,
        "smoothing": {"rotation": {"beta": 4.0}}}}))
    ack = json.loads(ws.recv())
    assert ack["type"] == "config"
    assert ack["config"]["detect_every"] == 10 and ack["config"]["include"] == ["landmarks68",
                                                                                 "mesh"]
    assert ack["config"]["smoothing"]["rotation"] == {"min_cutoff_hz": 1.0, "beta": 4.0,
                                                      "d_cutoff_hz": 1.0}
    bad = {7: ("corrupt", "corrupt_image"), 15: ("not-base64", "bad_request"),
           21: ("late", "bad_request")}
    sent = []
    # Everything is sent before anything is read: the service reads on as it answers.
    for k, (data, ms) in enumerate(zip(video.encoded, video.timestamps_ms, strict=True)):
        if k == 7:
            send_json_frame(ws, data[: len(data) // 4], "corrupt", ms - 1)
            sent.append("corrupt")
        if k == 15:
            ws.send(json.dumps({"type": "frame", "id": "not-base64", "image": "@@@"}))
            sent.append("not-base64")
        if k == 21:
            send_binary_frame(ws, data, {"id": "late", "timestamp_ms": 1.0})
            sent.append("late")
        if k % 2:
            send_binary_frame(ws, data, {"id": f"f{k}", "timestamp_ms": ms})
        else:
            send_json_frame(ws, data, f"f{k}", ms)
        sent.append(f"f{k}")
    ws.send(json.dumps({"type": "end"}))
    messages, code, _ = until_closed(ws)
    assert code == 1000
    frames, end = messages[:-1], messages[-1]
    assert end == {"type": "end", "frames": len(sent)}
    assert [f["id"] for f in frames] == sent
    assert [f["frame"] for f in frames] == list(range(len(sent)))
    for frame in frames:
        StreamFrameOut.model_validate(frame)
        if frame["id"] in {name for name, _ in bad.values()}:
            continue
        assert frame["error"] is None, frame["error"]
        assert [face["track_id"] for face in frame["faces"]] == [1]
        face = frame["faces"][0]
        assert len(face["landmarks68"]) == 68 and len(face["mesh"]["vertices_mm"]) == 468
    errors = {f["id"]: f["error"]["code"] for f in frames if f["error"]}
    assert errors == {name: code for name, code in bad.values()}
    assert all(not f["faces"] for f in frames if f["error"])
    detected = [f["id"] for f in frames if f["detected"]]
    assert detected[0] == "f0" and len(detected) <= 4


def test_protocol_misuse_closes_the_stream_with_a_reason(server_url: str,
                                                         video: Video) -> None:
    cases: list[tuple[list[str | bytes], str, int]] = [
        (["not json"], "bad_request", 1008),
        ([json.dumps({"type": "rewind"})], "bad_request", 1008),
        ([json.dumps({"type": "config", "config": {"detect_every": 0}})], "bad_option", 1008),
        ([json.dumps({"type": "config", "config": {"smoothing": {"rotation": {"beta": -1}}}})],
         "bad_option", 1008),
        ([json.dumps({"type": "config", "config": {"min_presence": 0}})], "bad_option", 1008),
    ]
    for messages, expected, expected_code in cases:
        ws = connect(server_url)
        for message in messages:
            ws.send(message)
        received, code, reason = until_closed(ws)
        assert code == expected_code and reason.startswith(expected)
        StreamErrorMessage.model_validate(received[-1])
        assert received[-1]["error"]["code"] == expected
    ws = connect(server_url)
    send_json_frame(ws, video.encoded[0], "first")
    ws.send(json.dumps({"type": "config", "config": {}}))
    received, code, reason = until_closed(ws)
    assert [m["type"] for m in received] == ["frame", "error"]
    assert code == 1008 and "before the first frame" in reason


def test_frames_without_timestamps_are_spaced_by_fps(server_url: str, video: Video) -> None:
    ws = connect(server_url)
    ws.send(json.dumps({"type": "config", "config": {"fps": 25, "smoothing":
                                                     {"enabled": False}}}))
    ws.recv()
    for data in video.encoded[:3]:
        ws.send_binary(struct.pack(">I", 0) + data)
    ws.send(json.dumps({"type": "end"}))
    messages, code, _ = until_closed(ws)
    assert code == 1000
    assert [m["timestamp_ms"] for m in messages[:-1]] == [0.0, 40.0, 80.0]
    assert all(m["faces"][0]["track_id"] == 1 for m in messages[:-1])


def test_api_keys_apply_to_the_upgrade_request(limited_url: str, video: Video) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(limited_url)
    assert refused.value.status_code == 401
    assert json.loads(refused.value.resp_body)["error"]["code"] == "unauthorized"
    with pytest.raises(websocket.WebSocketBadStatusException) as wrong:
        connect(limited_url, ["X-API-Key: not-the-key"])
    assert wrong.value.status_code == 401
    for header in (f"X-API-Key: {API_KEY}", f"Authorization: Bearer {API_KEY}"):
        ws = connect(limited_url, [header])
        send_json_frame(ws, video.encoded[0], "one")
        ws.send(json.dumps({"type": "end"}))
        messages, code, _ = until_closed(ws)
        assert code == 1000 and messages[0]["faces"][0]["track_id"] == 1
        wait_for_streams_open(limited_url, 0)


def test_stream_limit_and_idle_timeout(limited_url: str, video: Video) -> None:
    key = [f"X-API-Key: {API_KEY}"]
    first = connect(limited_url, key)
    send_json_frame(first, video.encoded[0], "a")
    assert json.loads(first.recv())["faces"][0]["track_id"] == 1
    wait_for_streams_open(limited_url, 1)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(limited_url, key)
    assert refused.value.status_code == 429
    assert refused.value.resp_headers["retry-after"]
    assert json.loads(refused.value.resp_body)["error"]["code"] == "overloaded"
    # Silent for longer than the idle timeout: the service closes the stream.
    messages, code, reason = until_closed(first)
    assert code == 4408 and reason.startswith("idle_timeout")
    assert messages == [{"type": "error", "error": {
        "code": "idle_timeout", "message": "no message for 1.5 s: the stream is closed"}}]
    wait_for_streams_open(limited_url, 0)
    second = connect(limited_url, key)
    second.send(json.dumps({"type": "end"}))
    assert until_closed(second)[1] == 1000


def test_a_client_that_vanishes_releases_its_stream(limited_url: str, video: Video) -> None:
    ws = connect(limited_url, [f"X-API-Key: {API_KEY}"])
    for k, data in enumerate(video.encoded[:12]):
        send_json_frame(ws, data, k)
    wait_for_streams_open(limited_url, 1)
    # Gone without a close handshake, frames still in flight.
    ws.sock.close()
    wait_for_streams_open(limited_url, 0)
    again = connect(limited_url, [f"X-API-Key: {API_KEY}"])
    again.send(json.dumps({"type": "end"}))
    assert until_closed(again)[1] == 1000


# --- gRPC Track ---------------------------------------------------------------------------

class Requests:
    """A request stream the test feeds while the call runs; ``close`` half-closes it."""

    def __init__(self) -> None:
        self._queue: queue.Queue[pb.TrackRequest | None] = queue.Queue()

    def put(self, request: pb.TrackRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[pb.TrackRequest]:
        while (request := self._queue.get()) is not None:
            yield request


def frame_request(data: bytes, frame_id: str, timestamp_ms: float | None = None
                  ) -> pb.TrackRequest:
    return pb.TrackRequest(frame=pb.TrackFrame(id=frame_id, data=data,
                                               timestamp_ms=timestamp_ms))


def test_grpc_track_keeps_one_track_id_and_a_bad_frame_fails_alone(grpc_target: str,
                                                                    video: Video) -> None:
    config = pb.TrackConfig(options=pb.Options(include=[pb.INCLUDE_LANDMARKS68]),
                            detect_every=10,
                            smoothing=pb.Smoothing(rotation=pb.OneEuro(beta=3.0)))
    requests = [pb.TrackRequest(config=config)]
    for k, (data, ms) in enumerate(zip(video.encoded, video.timestamps_ms, strict=True)):
        requests.append(frame_request(data, f"f{k}", ms))
        if k == 5:
            requests.append(frame_request(data[: len(data) // 4], "corrupt"))
    with grpc.insecure_channel(grpc_target) as channel:
        results = list(pb_grpc.FacePoseStub(channel).Track(iter(requests), timeout=120))
    assert [r.id for r in results] == [r.frame.id for r in requests[1:]]
    assert [r.frame for r in results] == list(range(len(requests) - 1))
    for result in results:
        if result.id == "corrupt":
            assert result.result.error.code == "corrupt_image" and not result.result.faces
            continue
        assert not result.result.HasField("error")
        assert [face.track_id for face in result.result.faces] == [1]
        assert len(result.result.faces[0].landmarks68) == 136
    assert [r.id for r in results if r.detected] == ["f0", "f10", "f20"]
    assert results[1].HasField("timestamp_ms") and results[1].timestamp_ms == pytest.approx(
        video.timestamps_ms[1])


def test_grpc_track_misuse_and_bad_config_are_invalid_argument(grpc_target: str,
                                                               video: Video) -> None:
    cases = [
        [frame_request(video.encoded[0], "a"), pb.TrackRequest(config=pb.TrackConfig())],
        [pb.TrackRequest(config=pb.TrackConfig(detect_every=0))],
        [pb.TrackRequest(config=pb.TrackConfig(options=pb.Options(min_presence=0.0)))],
        [pb.TrackRequest(config=pb.TrackConfig(options=pb.Options(quality="best")))],
        [pb.TrackRequest()],
    ]
    with grpc.insecure_channel(grpc_target) as channel:
        stub = pb_grpc.FacePoseStub(channel)
        for requests in cases:
            with pytest.raises(grpc.RpcError) as failed:
                list(stub.Track(iter(requests), timeout=60))
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert failed.value.details().split(":")[0] in {"bad_request", "bad_option"}


def test_grpc_track_keys_limit_idle_and_release(limited_url: str, limited_grpc_port: int,
                                                video: Video) -> None:
    target = f"127.0.0.1:{limited_grpc_port}"
    key = (("x-api-key", API_KEY),)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.FacePoseStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            list(stub.Track(iter([frame_request(video.encoded[0], "a")]), timeout=60))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED

        first = Requests()
        first.put(frame_request(video.encoded[0], "a"))
        call = stub.Track(iter(first), metadata=key, timeout=60)
        assert next(call).result.faces[0].track_id == 1
        wait_for_streams_open(limited_url, 1)
        # One stream at most, whatever the transport.
        with pytest.raises(grpc.RpcError) as full:
            list(stub.Track(iter([frame_request(video.encoded[0], "b")]), metadata=key,
                            timeout=60))
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            connect(limited_url, [f"X-API-Key: {API_KEY}"])
        assert refused.value.status_code == 429
        # Silent past the idle timeout.
        with pytest.raises(grpc.RpcError) as idle:
            next(call)
        assert idle.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert idle.value.details().startswith("idle_timeout")
        first.close()
        wait_for_streams_open(limited_url, 0)

        # A client that cancels mid-stream releases it too.
        second = Requests()
        for k, data in enumerate(video.encoded[:8]):
            second.put(frame_request(data, str(k)))
        call = stub.Track(iter(second), metadata=key, timeout=60)
        assert next(call).id == "0"
        call.cancel()
        second.close()
        wait_for_streams_open(limited_url, 0)
        half_closed = list(stub.Track(iter([frame_request(video.encoded[0], "c")]),
                                      metadata=key, timeout=60))
        assert [r.result.faces[0].track_id for r in half_closed] == [1]


def test_at_most_the_frames_in_flight_are_read_ahead_of_the_answers(video: Video) -> None:
    """The stream reads a client's next message only when fewer than
    FACEPOSE_STREAM_MAX_FRAMES_IN_FLIGHT frames wait for their answers (in process, real
    models; the transport's receive and send are these two functions)."""
    settings = Settings(stream_max_frames_in_flight=3)
    runtime = create_runtime(settings)
    frames = iter(video.encoded[:12])
    read = answered = most_ahead = 0

    async def receive() -> FrameIn | None:
        nonlocal read, most_ahead
        data = next(frames, None)
        if data is None:
            return None
        read += 1
        most_ahead = max(most_ahead, read - answered)
        return FrameIn(data)

    async def send(outgoing: Outgoing) -> None:
        nonlocal answered
        if isinstance(outgoing, FrameDone):
            assert outgoing.outcome.error is None
            answered += 1

    try:
        runner = StreamRunner(settings, InThread(runtime), MemoryBudget(1 << 40), "test")
        asyncio.run(runner.run(receive, send))
    finally:
        runtime.close()
    assert answered == 12 and most_ahead == 3


def test_sigterm_closes_open_streams_at_once() -> None:
    """A pod going away: a WebSocket stream's client hears 1012 ("service restart"), a gRPC
    Track's UNAVAILABLE, long before the grace period ends; both can reconnect elsewhere."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO, SERVER_ENV, wait_until
    from tests.images import astronaut, encode

    port, grpc_port = free_port(), free_port()
    env = {**os.environ, **SERVER_ENV, "FACEPOSE_PORT": str(port),
           "FACEPOSE_GRPC_PORT": str(grpc_port), "FACEPOSE_SHUTDOWN_GRACE_S": "20"}
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO,
                               env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(f"{url}/readyz", process)
        image = encode(astronaut())
        ws = connect(url)
        send_json_frame(ws, image, frame_id=1, timestamp_ms=0)
        assert json.loads(ws.recv())["type"] == "frame"
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        requests = Requests()
        requests.put(frame_request(image, "g1"))
        call = pb_grpc.FacePoseStub(channel).Track(iter(requests), timeout=60)
        assert next(call).id == "g1"

        terminated_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        send_json_frame(ws, image, frame_id=2, timestamp_ms=33)
        # Frame 2 is answered if the service read it before the signal; then the close. Raw
        # frames: recv_data would answer the close on a socket the service may have shut.
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_TEXT:
            answered = json.loads(frame.data)
            assert (answered["type"], answered["id"]) == ("frame", 2)
            frame = ws.recv_frame()
        assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", frame.data[:2])[0] == 1012
        with pytest.raises(grpc.RpcError) as ended:
            next(call)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting_down" in (ended.value.details() or "")
        assert process.wait(timeout=60) == 0
        assert time.monotonic() - terminated_at < 10  # not the 20 s grace
        requests.close()
        channel.close()
    finally:
        if process.poll() is None:
            process.kill()


def test_stream_frames_carry_blendshapes(server_url: str, video: Video) -> None:
    ws = connect(server_url)
    ws.send(json.dumps({"type": "config", "config": {"include": ["blendshapes"]}}))
    assert json.loads(ws.recv())["config"]["include"] == ["blendshapes"]
    count = 12
    for k, (data, ms) in enumerate(zip(video.encoded[:count], video.timestamps_ms[:count],
                                       strict=True)):
        send_json_frame(ws, data, f"f{k}", ms)
    ws.send(json.dumps({"type": "end"}))
    messages, code, _ = until_closed(ws)
    assert code == 1000
    scores = [face["blendshapes"] for frame in messages[:-1] for face in frame["faces"]]
    assert len(scores) == count  # one face a frame, tracked and detected frames alike
    assert all(len(face) == 52 and 0 <= min(face.values()) <= max(face.values()) <= 1
               for face in scores)
