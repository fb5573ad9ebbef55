from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# The test server's limits are small so that every limit can be hit cheaply.
SERVER_ENV = {
    "FACEPOSE_MAX_BODY_BYTES": str(8_000_000),
    "FACEPOSE_MAX_IMAGE_BYTES": str(3_000_000),
    "FACEPOSE_MAX_IMAGES_PER_REQUEST": "8",
    # Test gateways stop at once on SIGTERM; tests/test_drain.py drains one.
    "FACEPOSE_DRAIN_S": "0",
}


# A test that talks to a real gateway process is end to end: seconds, not milliseconds.
GATEWAY_FIXTURES = frozenset({"server_url", "client", "grpc_target"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that uses the session's gateway, so that `pytest -m "not slow"`
    is the in-process layer; tests that start a gateway of their own are marked by hand."""
    for item in items:
        if GATEWAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def engine_cache_paths() -> set[str]:
    """The TensorRT engine cache folder(s) the committed model configs name."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    paths = set()
    for path in sorted((REPO / "model_repository").glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
            paths.add(accelerator.parameters["trt_engine_cache_path"])
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(url: str, process: subprocess.Popen[bytes], timeout: float = 60,
               headers: dict[str, str] | None = None) -> None:
    """Until ``url`` answers 200 (the server process must stay up meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


@contextmanager
def gateway(extra_env: dict[str, str] | None = None, wait_ready: bool = True,
            headers: dict[str, str] | None = None) -> Iterator[str]:
    """A real gateway process (`facepose serve`) on a free loopback port; yields its URL."""
    with gateway_process(extra_env, wait_ready, headers) as (url, _):
        yield url


@contextmanager
def gateway_process(extra_env: dict[str, str] | None = None, wait_ready: bool = True,
                    headers: dict[str, str] | None = None
                    ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``gateway``, yielding its URL and its process."""
    port = free_port()
    env = {**os.environ, **SERVER_ENV, "FACEPOSE_GRPC_PORT": str(free_port()),
           **(extra_env or {}), "FACEPOSE_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"],
        cwd=REPO, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(f"{url}/readyz" if wait_ready else f"{url}/healthz", process,
                   headers=headers)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def server_url(grpc_port: int) -> Iterator[str]:
    """A real gateway (embedded runtime) on loopback ports, for the whole session."""
    with gateway({"FACEPOSE_GRPC_PORT": str(grpc_port)}) as url:
        yield url


@pytest.fixture(scope="session")
def grpc_target(server_url: str, grpc_port: int) -> str:
    """The session gateway's gRPC address."""
    return f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="session")
def client(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=60) as http:
        yield http
