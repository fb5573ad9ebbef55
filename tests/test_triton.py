"""The gateway against a real Triton server (the local CPU launcher), no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import websocket
from tritonclient.utils import InferenceServerException

from service.errors import BackendUnavailable
from service.metrics import INFERENCE_FAILURES
from service.runtime.base import infer
from service.runtime.triton import TritonRuntime, server_unavailable
from service.triton_local.server import LocalTriton
from tests.conftest import REPO, free_port, gateway
from tests.images import astronaut, encode
from tests.test_api import rotate_in_plane

pytestmark = pytest.mark.slow
JPEG = {"Content-Type": "image/jpeg"}


def start_triton(grpc_port: int | None = None) -> LocalTriton:
    # The installed server and its stub environment are shared with `facepose triton`.
    return LocalTriton(REPO / "model_repository", REPO / ".triton", free_port(),
                       grpc_port or free_port(), free_port())


@pytest.fixture(scope="module")
def triton() -> Iterator[LocalTriton]:
    with start_triton() as server:
        yield server


@pytest.fixture(scope="module")
def triton_url(triton: LocalTriton) -> Iterator[str]:
    with gateway({"FACEPOSE_RUNTIME": "triton", "FACEPOSE_TRITON_URL": triton.grpc_url}) as url:
        yield url


def mosaic() -> np.ndarray:
    tile = cv2.resize(astronaut(), (256, 256))
    return np.vstack([np.hstack([tile, tile[:, ::-1]]), np.hstack([tile[:, ::-1], tile])])


CASES = {
    "astronaut": lambda: encode(astronaut()),
    "flipped": lambda: encode(astronaut()[:, ::-1].copy()),
    "rotated": lambda: encode(rotate_in_plane(astronaut(), 30)),
    "four faces": lambda: encode(mosaic()),
}


def faces(url: str, data: bytes) -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/v1/faces", content=data, headers=JPEG, timeout=60,
                          params={"include": "landmarks,iris,blendshapes"})
    assert response.status_code == 200, response.text
    return response.json()["images"][0]["faces"]


@pytest.mark.parametrize("case", list(CASES))
def test_triton_gives_the_embedded_results(server_url: str, triton_url: str, case: str) -> None:
    data = CASES[case]()
    embedded, served = faces(server_url, data), faces(triton_url, data)
    assert len(embedded) == len(served) > 0
    for a, b in zip(embedded, served, strict=True):
        for angle in ("pitch", "yaw", "roll"):
            assert abs(a["pose"]["euler_deg"][angle] - b["pose"]["euler_deg"][angle]) < 0.01
        # Embedded, V2 runs under LiteRT; in Triton, its ONNX model: ~1e-3 px apart, which the
        # answers' rounding to 0.01 px can turn into one step.
        assert np.abs(np.array(a["landmarks"]) - np.array(b["landmarks"])).max() < 0.015
        assert np.abs(np.array(a["iris"]["left"]["centre"])
                      - np.array(b["iris"]["left"]["centre"])).max() < 0.01
        assert a["blendshapes"].keys() == b["blendshapes"].keys()
        assert max(abs(a["blendshapes"][k] - b["blendshapes"][k]) for k in a["blendshapes"]) < 0.01


def test_http_protocol_gives_the_same_results(server_url: str, triton: LocalTriton) -> None:
    env = {"FACEPOSE_RUNTIME": "triton", "FACEPOSE_TRITON_PROTOCOL": "http",
           "FACEPOSE_TRITON_URL": f"{triton.address}:{triton.http_port}"}
    with gateway(env) as url:
        data = CASES["four faces"]()
        a, b = faces(server_url, data), faces(url, data)
        def angles(found: list[dict[str, Any]]) -> np.ndarray:
            return np.array([list(f["pose"]["euler_deg"].values()) for f in found])

        assert np.abs(angles(a) - angles(b)).max() < 0.01


def stats(triton: LocalTriton, model: str) -> tuple[int, int]:
    body = httpx.get(f"{triton.http_url}/v2/models/{model}/stats").json()
    model_stats = body["model_stats"][0]
    return int(model_stats["inference_count"]), int(model_stats["execution_count"])


def histogram(metrics: str, name: str) -> tuple[float, float]:
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines()
                  if line.startswith((f"{name}_sum", f"{name}_count")))
    return float(values[f"{name}_sum"]), float(values[f"{name}_count"])


def test_concurrent_requests_are_batched(triton: LocalTriton, triton_url: str) -> None:
    before = {m: stats(triton, m) for m in ("face_detector_short", "face_mesh_v2")}
    data = encode(astronaut())
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda _: httpx.post(f"{triton_url}/v1/faces", content=data,
                                                   headers=JPEG, timeout=60).status_code,
                              range(32)))
    assert codes == [200] * 32
    for model, (inferences, executions) in before.items():
        after_inferences, after_executions = stats(triton, model)
        # Triton's own count: fewer executions than inferences means batched model calls.
        assert after_executions - executions < after_inferences - inferences, model
    images, calls = histogram(httpx.get(f"{triton_url}/metrics").text, "facepose_batch_images")
    assert images / calls > 1.0


def test_triton_down_then_back_then_hung() -> None:
    grpc_port = free_port()
    env = {"FACEPOSE_RUNTIME": "triton", "FACEPOSE_TRITON_URL": f"127.0.0.1:{grpc_port}",
           "FACEPOSE_TRITON_TIMEOUT_S": "2"}
    data = encode(astronaut())
    with gateway(env, wait_ready=False) as url:
        # Down at start: not ready, and requests are refused at once with a JSON 503.
        assert httpx.get(f"{url}/readyz").status_code == 503
        refused = httpx.post(f"{url}/v1/faces", content=data, headers=JPEG, timeout=30)
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert refused.json()["error"]["code"] == "backend_unavailable"
        # A video stream is refused alike, before the upgrade.
        with pytest.raises(websocket.WebSocketBadStatusException) as stream_refused:
            websocket.create_connection(url.replace("http", "ws", 1) + "/v1/stream", timeout=10)
        assert stream_refused.value.status_code == 503
        assert stream_refused.value.resp_headers["retry-after"] == refused.headers["Retry-After"]
        assert json.loads(stream_refused.value.resp_body)["error"]["code"] == "backend_unavailable"

        server = start_triton(grpc_port).start()
        try:
            # Back: the same gateway process recovers by itself.
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/readyz").status_code != 200:
                assert time.monotonic() < deadline, "gateway did not recover"
                time.sleep(0.2)
            assert httpx.post(f"{url}/v1/faces", content=data, headers=JPEG,
                              timeout=30).status_code == 200

            # Hung: a frozen Triton answers nothing; the call's deadline still ends it.
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                time.sleep(1.2)  # past the readiness cache
                started = time.monotonic()
                hung = httpx.post(f"{url}/v1/faces", content=data, headers=JPEG, timeout=30)
                assert hung.status_code == 503
                assert time.monotonic() - started < 10
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
        finally:
            server.stop()
        # Stopped: not ready again, and 503.
        time.sleep(1.2)
        assert httpx.get(f"{url}/readyz").status_code == 503
        gone = httpx.post(f"{url}/v1/faces", content=data, headers=JPEG, timeout=30)
        assert gone.status_code == 503
        json.dumps(gone.json())


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_call_the_server_refuses_is_a_fault_not_an_outage(triton: LocalTriton,
                                                            protocol: str) -> None:
    """Triton refusing a tensor of the wrong shape is facepose's bug: raised as it came (an
    internal error for the client, logged and counted as reason="error"), not reported as the
    server being unavailable, which would send clients to retry a call that cannot work."""
    url = (triton.grpc_url if protocol == "grpc"
           else f"{triton.address}:{triton.http_port}")
    runtime = TritonRuntime(url, REPO / "model_repository", protocol)  # type: ignore[arg-type]
    spec = runtime.specs["face_mesh"]
    wrong_shape = {spec.inputs[0].name: np.zeros((1, 7, 7, 3), np.uint8)}
    failures = INFERENCE_FAILURES.labels("triton", "face_mesh", "error")
    before = failures._value.get()
    try:
        with pytest.raises(Exception) as raised:
            infer(runtime, "face_mesh", wrong_shape)
        assert not isinstance(raised.value, BackendUnavailable)
        assert not server_unavailable(raised.value)
        assert failures._value.get() == before + 1
        # The server itself stays up and ready.
        assert runtime.is_ready()
    finally:
        runtime.close()


def test_only_outages_are_reported_as_the_server_unavailable() -> None:
    assert server_unavailable(ConnectionRefusedError())
    assert server_unavailable(TimeoutError())
    for status in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "503", "504"):
        assert server_unavailable(InferenceServerException("x", status))
    for status in ("StatusCode.INVALID_ARGUMENT", "StatusCode.INTERNAL", "400", "500", None):
        assert not server_unavailable(InferenceServerException("x", status))
    assert not server_unavailable(ValueError("a bug of ours"))


def test_a_fault_is_a_500_that_closes_the_connection(triton: LocalTriton,
                                                     tmp_path: Path) -> None:
    """A gateway whose face-mesh input disagrees with the server's (a deployment bug): the
    client gets the JSON 500 with Connection: close over real HTTP, not a 503 to retry."""
    repository = tmp_path / "model_repository"
    shutil.copytree(REPO / "model_repository", repository,
                    ignore=shutil.ignore_patterns("*.onnx"))
    config = repository / "face_mesh_v2" / "config.pbtxt"
    config.write_text(config.read_text().replace("[ 256, 256, 3 ]", "[ 160, 160, 3 ]", 1))
    env = {"FACEPOSE_RUNTIME": "triton", "FACEPOSE_TRITON_URL": triton.grpc_url,
           "FACEPOSE_MODEL_REPOSITORY": str(repository)}
    with gateway(env) as url, httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/v1/faces", content=encode(astronaut()), headers=JPEG)
        assert response.status_code == 500
        assert response.json() == {"error": {"code": "internal_error",
                                             "message": "internal error"}}
        assert response.headers["Connection"] == "close"
        assert client.get("/healthz").status_code == 200  # a new connection, and still up
        metrics = client.get("/metrics").text
    assert ('facepose_inference_failures_total{model="face_mesh_v2",reason="error",'
            'runtime="triton"}') in metrics


def metric_sum(metrics: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def triton_requests(server: LocalTriton) -> int:
    """Inference requests the server has answered, all models (its own statistics)."""
    body = httpx.get(f"{server.http_url}/v2/models/stats").json()
    return sum(int(m["inference_stats"]["success"]["count"]) for m in body["model_stats"])


def one_face_photos() -> dict[str, bytes]:
    """A portrait, a VGA frame and a 1080p frame with one face (the face a fifth of its
    width, so the whole-image pass alone misses it and tiles find it)."""
    face = astronaut()
    vga = np.full((480, 640, 3), 90, np.uint8)
    vga[:, 64:576] = cv2.resize(face, (512, 480))
    hd = np.full((1080, 1920, 3), 90, np.uint8)
    hd[140:940, 560:1360] = cv2.resize(face, (800, 800))
    return {"portrait": encode(face), "vga": encode(vga), "1080p": encode(hd)}


def test_a_one_face_photo_costs_at_most_three_model_calls(triton: LocalTriton,
                                                          triton_url: str) -> None:
    """Counted by the gateway's own metrics and by Triton's statistics (the same), photos
    sent one at a time with the default preset."""
    for name, data in one_face_photos().items():
        metrics = httpx.get(f"{triton_url}/metrics").text
        calls = metric_sum(metrics, "facepose_inference_duration_seconds_count",
                           runtime="triton")
        served = triton_requests(triton)
        assert len(faces(triton_url, data)) == 1, name
        metrics = httpx.get(f"{triton_url}/metrics").text
        gateway_calls = metric_sum(metrics, "facepose_inference_duration_seconds_count",
                                   runtime="triton") - calls
        # `faces` asks for irises too: one call more than the default request.
        assert gateway_calls - 1 <= 3, name
        assert triton_requests(triton) - served == gateway_calls, name


def test_images_go_to_triton_as_uint8(triton_url: str) -> None:
    """A FaceMesh V2 crop is 256 x 256 x 3 bytes on the wire, a quarter of its float32 size."""
    metrics = httpx.get(f"{triton_url}/metrics").text
    sent = metric_sum(metrics, "facepose_inference_input_bytes_total", model="face_mesh_v2")
    crops = metric_sum(metrics, "facepose_model_batch_size_sum", model="face_mesh_v2")
    faces(triton_url, encode(astronaut()))
    metrics = httpx.get(f"{triton_url}/metrics").text
    sent = metric_sum(metrics, "facepose_inference_input_bytes_total", model="face_mesh_v2") - sent
    crops = metric_sum(metrics, "facepose_model_batch_size_sum", model="face_mesh_v2") - crops
    assert crops >= 1 and sent == crops * 256 * 256 * 3


def test_one_gateway_spreads_over_two_tritons_and_outlives_one(triton: LocalTriton) -> None:
    data = encode(astronaut())

    def send(_: int) -> int:
        return httpx.post(f"{url}/v1/faces", content=data, headers=JPEG,
                          timeout=60).status_code

    with start_triton() as second:
        servers = (triton, second)
        env = {"FACEPOSE_RUNTIME": "triton",
               "FACEPOSE_TRITON_URL": f"{triton.grpc_url},{second.grpc_url}"}
        with gateway(env) as url:
            before = [stats(server, "face_mesh_v2")[0] for server in servers]
            with ThreadPoolExecutor(4) as pool:
                assert list(pool.map(send, range(40))) == [200] * 40
            served = [stats(server, "face_mesh_v2")[0] - b for server, b in zip(servers, before,
                                                                             strict=True)]
            assert sum(served) >= 40
            assert min(served) >= 0.3 * sum(served), served

            # One server killed while requests are in flight: every request still succeeds.
            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(send, i) for i in range(40)]
                while sum(f.done() for f in futures) < 8:
                    time.sleep(0.01)
                assert second.process is not None
                second.process.kill()
                assert [f.result() for f in futures] == [200] * 40
            time.sleep(1.2)  # past the readiness cache
            assert httpx.get(f"{url}/readyz").status_code == 200
            metrics = httpx.get(f"{url}/metrics").text
            assert metric_sum(metrics, "facepose_inference_servers", state="ready") == 1
            assert metric_sum(metrics, "facepose_inference_servers", state="unready") == 1


def test_a_hung_triton_among_two_costs_time_not_requests(triton: LocalTriton) -> None:
    """A frozen server answers nothing: the calls sent to it wait their deadline and go to the
    other; readiness checks stay short, and the hung one is skipped while it stays hung."""
    data = encode(astronaut())
    with start_triton() as second:
        env = {"FACEPOSE_RUNTIME": "triton", "FACEPOSE_TRITON_TIMEOUT_S": "2",
               "FACEPOSE_TRITON_URL": f"{triton.grpc_url},{second.grpc_url}"}
        with gateway(env) as url:
            assert second.process is not None
            os.kill(second.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                codes = [httpx.post(f"{url}/v1/faces", content=data, headers=JPEG,
                                    timeout=60).status_code for _ in range(12)]
                took = time.monotonic() - started
                checked = time.monotonic()
                assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
                assert time.monotonic() - checked < 3
            finally:
                os.kill(second.process.pid, signal.SIGCONT)
    assert codes == [200] * 12
    # Skipped after its first timeouts: far less than a deadline per request.
    assert took < 12 * 2 / 2, took
