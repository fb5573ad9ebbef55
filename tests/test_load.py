"""Past capacity the gateway sheds load at once and stays healthy (loopback, bounded)."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import grpc
import httpx
import numpy as np
import pytest

from service.clients import GrpcClient
from tests.conftest import free_port, gateway
from tests.images import astronaut, encode

pytestmark = pytest.mark.slow
JPEG = {"Content-Type": "image/jpeg"}
CLIENTS = 48
REQUESTS_PER_CLIENT = 12
MAX_SECONDS = 20.0


def hammer(url: str, data: bytes) -> list[tuple[int, float, str | None]]:
    """One client: back-to-back requests, bounded in count and time."""
    results: list[tuple[int, float, str | None]] = []
    stop_at = time.monotonic() + MAX_SECONDS
    with httpx.Client(timeout=60) as http:
        for _ in range(REQUESTS_PER_CLIENT):
            if time.monotonic() > stop_at:
                break
            started = time.perf_counter()
            response = http.post(f"{url}/v1/faces", content=data, headers=JPEG)
            results.append((response.status_code, time.perf_counter() - started,
                            response.headers.get("Retry-After")))
    return results


def summary(results: list[tuple[int, float, str | None]]) -> dict[str, Any]:
    ok = np.array([s for code, s, _ in results if code == 200])
    shed = np.array([s for code, s, _ in results if code == 429])
    return {
        "codes": dict(Counter(code for code, _, _ in results)),
        "admitted_p50_s": float(np.percentile(ok, 50)),
        "admitted_p99_s": float(np.percentile(ok, 99)),
        "shed_p99_s": float(np.percentile(shed, 99)) if len(shed) else None,
    }


def test_overload_sheds_with_429_and_recovers() -> None:
    grpc_port = free_port()
    env = {"FACEPOSE_MAX_IN_FLIGHT_REQUESTS": "4", "FACEPOSE_RETRY_AFTER_S": "1",
           "FACEPOSE_GRPC_PORT": str(grpc_port)}
    data = encode(astronaut())
    with gateway(env) as url:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(lambda _: hammer(url, data), range(CLIENTS))
                       for r in rs]
        figures = summary(results)
        print(f"\noverload: {len(results)} requests from {CLIENTS} clients: {figures}")
        codes = figures["codes"]
        assert set(codes) <= {200, 429}, codes  # never a 5xx
        assert codes.get(429, 0) > 0 and codes.get(200, 0) > 0
        assert all(retry == "1" for code, _, retry in results if code == 429)
        # Admitted requests wait for at most a few others, not for the whole crowd.
        assert figures["admitted_p99_s"] < 5.0
        assert figures["shed_p99_s"] < 1.0

        # gRPC sheds the same way.
        def call(_: int) -> grpc.StatusCode:
            with GrpcClient(f"127.0.0.1:{grpc_port}") as rpc:
                try:
                    rpc.estimate([data, data])
                    return grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    return exc.code()  # type: ignore[attr-defined]

        with ThreadPoolExecutor(32) as pool:
            statuses = Counter(pool.map(call, range(64)))
        print(f"overload over gRPC: {dict((k.name, v) for k, v in statuses.items())}")
        assert set(statuses) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert statuses[grpc.StatusCode.RESOURCE_EXHAUSTED] > 0

        # After the load it serves normally.
        for _ in range(5):
            response = httpx.post(f"{url}/v1/faces", content=data, headers=JPEG, timeout=30)
            assert response.status_code == 200
            assert len(response.json()["images"][0]["faces"]) == 1
        assert httpx.get(f"{url}/readyz").status_code == 200


def test_server_side_deadline_gives_504() -> None:
    tile = cv2.resize(astronaut(), (360, 360))
    crowd = encode(np.tile(tile, (3, 5, 1))[:1080, :1800])
    with gateway({"FACEPOSE_REQUEST_TIMEOUT_S": "0.05"}) as url:
        response = httpx.post(f"{url}/v1/faces", timeout=60,
                              files=[("images", (f"{i}.jpg", crowd, "image/jpeg"))
                                     for i in range(8)])
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "deadline_exceeded"
        # The service is fine afterwards.
        assert httpx.get(f"{url}/readyz").status_code == 200
