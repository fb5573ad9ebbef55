from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from service.clients import GrpcClient, RestClient
from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from service.grpc.generate import generate
from tests.conftest import REPO, SERVER_ENV, free_port, wait_until
from tests.images import astronaut, encode
from tests.test_api import rotate_in_plane

INCLUDE = ["mesh", "landmarks", "landmarks68", "iris", "blendshapes"]


def images() -> list[bytes]:
    tile = cv2.resize(astronaut(), (256, 256))
    return [encode(astronaut()), encode(rotate_in_plane(astronaut(), 25), ".png"),
            encode(np.hstack([tile, tile[:, ::-1]]), ".webp")]


def assert_same_entries(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x["index"], x["width"], x["height"], x["error"]) == (
            y["index"], y["width"], y["height"], y["error"])
        assert len(x["faces"]) == len(y["faces"])
        for f, g in zip(x["faces"], y["faces"], strict=True):
            for key in ("pitch", "yaw", "roll"):
                assert f["pose"]["euler_deg"][key] == pytest.approx(
                    g["pose"]["euler_deg"][key], abs=1e-3)
            np.testing.assert_allclose(f["pose"]["rotation_matrix"],
                                       g["pose"]["rotation_matrix"], atol=1e-5)
            np.testing.assert_allclose(f["box"], g["box"], atol=1e-3)
            for key in ("landmarks", "landmarks68"):
                np.testing.assert_allclose(f[key], g[key], atol=1e-2)
            np.testing.assert_allclose(f["mesh"]["vertices_mm"], g["mesh"]["vertices_mm"],
                                       atol=1e-2)
            np.testing.assert_allclose(f["iris"]["left"]["centre"],
                                       g["iris"]["left"]["centre"], atol=1e-2)


def test_generated_code_is_current(tmp_path: Path) -> None:
    for generated in generate(tmp_path):
        committed = REPO / generated.relative_to(tmp_path)
        assert generated.read_text() == committed.read_text(), (
            f"{committed} is stale: run `python -m service.grpc.generate`")


def test_unary_matches_rest(server_url: str, grpc_target: str) -> None:
    data = images()
    with RestClient(server_url) as rest, GrpcClient(grpc_target) as rpc:
        assert_same_entries(rpc.estimate(data, include=INCLUDE),
                            rest.faces(data, include=INCLUDE))


def test_stream_matches_rest_and_survives_a_bad_image(server_url: str,
                                                      grpc_target: str) -> None:
    data = images()
    items = [(f"img-{i}", d) for i, d in enumerate(data)]
    items.insert(1, ("broken", data[0][: len(data[0]) // 3]))
    with RestClient(server_url) as rest, GrpcClient(grpc_target) as rpc:
        streamed = dict(rpc.stream(items, include=INCLUDE))
        expected = rest.faces(data, include=INCLUDE)
    assert set(streamed) == {item_id for item_id, _ in items}
    assert streamed["broken"]["error"]["code"] == "corrupt_image"
    for i, entry in enumerate(expected):
        got = dict(streamed[f"img-{i}"], index=entry["index"])
        assert_same_entries([got], [entry])


def test_client_boxes_and_options_travel(grpc_target: str) -> None:
    with GrpcClient(grpc_target) as rpc:
        detected = rpc.estimate([encode(astronaut())], include=["landmarks68"])[0]["faces"][0]
        points = np.array(detected["landmarks68"])
        box = [*points.min(axis=0), *points.max(axis=0)]
        (entry,) = rpc.estimate([encode(astronaut())], boxes=[[box]], fx=900.0,
                                quality="fast")
        (default,) = rpc.estimate([encode(astronaut())])
    assert entry["camera"]["source"] == "request" and entry["camera"]["fx"] == 900.0
    assert entry["faces"][0]["score"] == 1.0
    assert entry["quality"] == "fast" and default["quality"] == "balanced"


def test_errors_map_to_status_codes(grpc_target: str) -> None:
    with GrpcClient(grpc_target) as rpc:
        with pytest.raises(grpc.RpcError) as bad_option:
            rpc.estimate([encode(astronaut())], min_score=3.0)
        assert bad_option.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as bad_quality:
            rpc.estimate([encode(astronaut())], quality="best")
        assert bad_quality.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as bad_box:
            rpc.estimate([encode(astronaut())], boxes=[[[10, 10, 5, 5]]])
        assert bad_box.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as too_many:
            rpc.estimate([b"x"] * 9)  # the test server allows 8
        assert too_many.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        (entry,) = rpc.estimate([b"not an image"])
        assert entry["error"]["code"] == "unsupported_image"


def test_short_deadline_gives_deadline_exceeded(grpc_target: str) -> None:
    with GrpcClient(grpc_target, timeout_s=0.01) as rpc, pytest.raises(grpc.RpcError) as late:
        rpc.estimate([encode(astronaut())] * 8, include=INCLUDE)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_health_reflection_and_topology(grpc_target: str) -> None:
    with grpc.insecure_channel(grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "facepose.v1.FacePose"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "facepose.v1.FacePose" in database.get_services()
        methods = database.FindFileContainingSymbol("facepose.v1.FacePose").service[0].method
        assert {m.name for m in methods} == {"Estimate", "EstimateStream", "GetMeshTopology",
                                         "Track"}
        topology = pb_grpc.FacePoseStub(channel).GetMeshTopology(pb.GetMeshTopologyRequest(),
                                                                  timeout=5)
    assert topology.num_vertices == 468 and len(topology.triangles) == 898 * 3


def test_a_taken_grpc_port_stops_the_second_gateway_at_start(server_url: str,
                                                              grpc_port: int) -> None:
    """gRPC binds with SO_REUSEPORT unless told not to: a second gateway on the same port would
    start and take half of the calls. It must refuse to start instead, saying why."""
    env = {**os.environ, **SERVER_ENV, "FACEPOSE_GRPC_PORT": str(grpc_port),
           "FACEPOSE_PORT": str(free_port())}
    second = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 3, second.stderr[-2000:]
    assert f"gRPC cannot listen on 127.0.0.1:{grpc_port}: the port is taken" in second.stderr
    # The first gateway still answers every call.
    with GrpcClient(f"127.0.0.1:{grpc_port}") as rpc:
        for _ in range(4):
            assert rpc.estimate([encode(astronaut())])[0]["faces"]


def test_the_start_up_log_names_the_rest_and_grpc_addresses(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    rest, grpc_port = free_port(), free_port()
    env = {**os.environ, **SERVER_ENV, "FACEPOSE_GRPC_PORT": str(grpc_port),
           "FACEPOSE_PORT": str(rest)}
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host",
                                    "127.0.0.1"], cwd=REPO, env=env, stderr=sink)
        try:
            wait_until(f"http://127.0.0.1:{rest}/readyz", process)
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    messages = " | ".join(f"{e['msg']} {e.get('address', '')}" for e in lines)
    assert f"http://127.0.0.1:{rest}" in messages, messages
    assert f"gRPC listening 127.0.0.1:{grpc_port}" in messages, messages
