"""Under a burst and under slow clients, against a real gateway: memory stays inside its budget
and comes back, and clients slow to send cannot lock the others out."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import grpc
import h2.config
import h2.connection
import httpx
import numpy as np
import pytest

from service.app import memory
from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from service.http.connections import MAX_HEAD_BYTES
from tests.conftest import free_port, gateway_process
from tests.images import astronaut, encode

pytestmark = pytest.mark.slow
JPEG = {"Content-Type": "image/jpeg"}
BUDGET_MB = 512
# Beyond the budget and the idle process: what the budget's estimate per megapixel misses, the
# interpreter's and the HTTP server's own allocations under 64 connections. With FaceMesh V2 in
# the default preset the peak of this burst varies from run to run, 480 to 1,150 MB over an
# idle 204 with 22 requests admitted (the V1-only preset: 380-400 with 52): up to 21 MB a
# megapixel against the budget's 12. Part of it was the detector's squares, all of a batch's
# stacked with their outputs at once (a 1080p photo searched down to 48 px is 78 squares): run a
# model batch at a time, this burst's peak went from 625-642 to 383-413 MB in two runs each.
# 500 MB keeps the bound.
HEADROOM_MB = 500


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def frame_1080p() -> bytes:
    canvas = np.full((1080, 1920, 3), 120, np.uint8)
    canvas[:, 420:1500] = cv2.resize(astronaut(), (1080, 1080), interpolation=cv2.INTER_CUBIC)
    return encode(canvas, quality=90)


def test_a_burst_stays_in_its_budget_and_memory_comes_back() -> None:
    env = {"FACEPOSE_MAX_INFLIGHT_MB": str(BUDGET_MB), "FACEPOSE_RETRY_AFTER_S": "1",
           "FACEPOSE_MAX_BODY_BYTES": str(32 << 20), "FACEPOSE_MAX_IMAGE_BYTES": str(16 << 20)}
    data = frame_1080p()
    with gateway_process(env) as (url, process):
        for _ in range(2):  # warm-up
            assert httpx.post(f"{url}/v1/faces", content=data, headers=JPEG,
                              timeout=60).status_code == 200
        time.sleep(1.0)
        idle = rss_mb(process.pid)
        peak, stop = [idle], threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak.append(rss_mb(process.pid))
                time.sleep(0.02)

        def send(_: int) -> tuple[int, str | None]:
            response = httpx.post(f"{url}/v1/faces", content=data, headers=JPEG, timeout=120)
            return response.status_code, response.headers.get("Retry-After")

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(64) as pool:
                answers = list(pool.map(send, range(128)))
        finally:
            stop.set()
            watcher.join()
        time.sleep(2.0)
        after = rss_mb(process.pid)
    print(f"RSS MB: idle {idle:.0f}, peak {max(peak):.0f}, 2 s after {after:.0f}; "
          f"answers {Counter(code for code, _ in answers)}")
    codes = Counter(code for code, _ in answers)
    assert set(codes) <= {200, 429}, codes
    assert codes[200] >= 16
    assert all(retry == "1" for code, retry in answers if code == 429)
    assert max(peak) <= idle + BUDGET_MB + HEADROOM_MB, (idle, max(peak))
    assert after <= idle + 200, (idle, after)


def stalled_upload(port: int) -> socket.socket:
    """A POST that declares 100,000 bytes of body, sends 1,000 and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                 b"Content-Length: 100000\r\n\r\n" + b"\xff" * 1000)
    return sock


def test_stalled_uploads_cannot_lock_out_the_others() -> None:
    env = {"FACEPOSE_BODY_READ_TIMEOUT_S": "3"}
    data = encode(astronaut())
    with gateway_process(env) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        started = time.monotonic()
        stalled = [stalled_upload(port) for _ in range(70)]
        try:
            time.sleep(0.5)
            # 70 stalled uploads, more than the 64 request slots: a normal request still goes.
            for _ in range(3):
                response = httpx.post(f"{url}/v1/faces", content=data, headers=JPEG, timeout=10)
                assert response.status_code == 200, response.text
            answers = []
            for sock in stalled:
                sock.settimeout(max(0.1, started + 3 + 0.1 + 5 - time.monotonic()))
                answers.append(sock.recv(4096).split(b"\r\n", 1)[0])
            took = time.monotonic() - started
        finally:
            for sock in stalled:
                sock.close()
    assert set(answers) == {b"HTTP/1.1 408 Request Timeout"}, Counter(answers)
    # Each within its deadline (3 s + 100,000 bytes at 1 MB/s), give or take the scheduling.
    assert took < 3 + 0.1 + 3


def test_idle_and_half_open_connections_are_closed_and_capped() -> None:
    """Connections that send nothing, or half a head, are closed at the head deadline; past
    the connection cap new ones are refused until then, and none can hold the server."""
    env = {"FACEPOSE_HEAD_READ_TIMEOUT_S": "1", "FACEPOSE_MAX_CONNECTIONS": "60"}
    data = encode(astronaut())
    with gateway_process(env) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(25)]
        half = [socket.create_connection(("127.0.0.1", port)) for _ in range(25)]
        for sock in half:
            sock.sendall(b"POST /v1/faces HTTP/1.1\r\nHost: x\r\nContent-Type: image/j")
        try:
            # 50 held of the 60: a normal request still goes.
            assert httpx.post(f"{url}/v1/faces", content=data, headers=JPEG,
                              timeout=10).status_code == 200
            # Past the cap: refused at once (uvicorn's own 503) rather than queued.
            extra = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 503
            for sock in silent + half + extra:
                sock.settimeout(3.0)
                assert sock.recv(4096) == b""  # closed by the server at the head deadline
            assert httpx.post(f"{url}/v1/faces", content=data, headers=JPEG,
                              timeout=10).status_code == 200
        finally:
            for sock in silent + half:
                sock.close()
        # A head that goes on past MAX_HEAD_BYTES is refused, not buffered.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(5.0)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: "
                         + b"x" * (4 * MAX_HEAD_BYTES))
            assert sock.recv(4096).startswith(b"HTTP/1.1 431 Request Header Fields Too Large")


def stalled_grpc_call(port: int) -> socket.socket:
    """An Estimate call whose message declares 100,000 bytes, sends 1,000 and then nothing:
    raw HTTP/2 frames, which no gRPC client sends."""
    sock = socket.create_connection(("127.0.0.1", port))
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    stream = connection.get_next_available_stream_id()
    connection.send_headers(stream, [
        (":method", "POST"), (":scheme", "http"), (":authority", "x"),
        (":path", "/facepose.v1.FacePose/Estimate"), ("content-type", "application/grpc"),
        ("te", "trailers")])
    connection.send_data(stream, b"\x00" + struct.pack(">I", 100_000) + b"\x0a" * 1000)
    sock.sendall(connection.data_to_send())
    return sock


def test_stalled_grpc_calls_cannot_lock_out_the_others() -> None:
    """A gRPC call takes no request slot and no memory budget until its message is read:
    70 stalled calls, more than the 64 slots, and an Estimate call beside them still goes."""
    grpc_port = free_port()
    data = encode(astronaut())
    with gateway_process({"FACEPOSE_GRPC_PORT": str(grpc_port)}) as (url, _):
        stalled = [stalled_grpc_call(grpc_port) for _ in range(70)]
        try:
            time.sleep(0.5)
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                reply = pb_grpc.FacePoseStub(channel).Estimate(
                    pb.EstimateRequest(images=[pb.Image(data=data)]), timeout=10)
            assert len(reply.results[0].faces) == 1
            assert httpx.post(f"{url}/v1/faces", content=data, headers=JPEG,
                              timeout=10).status_code == 200
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            assert "facepose_inflight_bytes 0.0" in metrics
        finally:
            for sock in stalled:
                sock.close()


def test_the_heap_is_trimmed_once_the_service_stays_idle(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Not at every idle moment (that cost 5 ms a request at concurrency 1), and not while
    requests are in."""
    trims: list[float] = []
    monkeypatch.setattr(memory, "trim_heap", lambda: trims.append(time.monotonic()))
    monkeypatch.setattr(memory, "TRIM_AFTER_IDLE_S", 0.1)
    in_service = [0]

    async def scenario() -> None:
        trim = memory.TrimWhenIdle(lambda: in_service[0])
        for _ in range(5):  # idle moments between back-to-back requests: one trim, later
            trim.idle()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert len(trims) == 1
        trim.idle()
        in_service[0] = 1  # a request came in before the delay ran out
        await asyncio.sleep(0.2)
        assert len(trims) == 1

    asyncio.run(scenario())
