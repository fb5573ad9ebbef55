from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.clients import GrpcClient
from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from tests.conftest import free_port, gateway
from tests.images import astronaut, encode

KEYS = ("k-one-3f9a", "k-two-77c1")
JPEG = {"Content-Type": "image/jpeg"}


# Each test talks to a gateway process of this module's.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text(f"# facepose keys\n{KEYS[1]}\n")
    grpc_port = free_port()
    env = {"FACEPOSE_API_KEYS": KEYS[0], "FACEPOSE_API_KEYS_FILE": str(keys_file),
           "FACEPOSE_GRPC_PORT": str(grpc_port)}
    with gateway(env) as url:
        yield url, f"127.0.0.1:{grpc_port}"


def post(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/v1/faces", content=encode(astronaut()),
                      headers={**JPEG, **headers}, timeout=30)


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"X-API-Key": "k-one-3f9"}, 401),  # a prefix of a real key
    ({"Authorization": "Basic azpvbmU="}, 401),
    ({"Authorization": f"Bearer {KEYS[0]}"}, 200),
    ({"X-API-Key": KEYS[1]}, 200),  # from the keys file
])
def test_rest_needs_a_valid_key(secured: tuple[str, str], headers: dict[str, str],
                                status: int) -> None:
    response = post(secured[0], headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert KEYS[0] not in response.text


def test_health_and_metrics_stay_open_by_default(secured: tuple[str, str]) -> None:
    url, target = secured
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert httpx.get(f"{url}{path}").status_code == 200, path
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_needs_a_valid_key(secured: tuple[str, str]) -> None:
    target = secured[1]
    with GrpcClient(target) as rpc, pytest.raises(grpc.RpcError) as missing:
        rpc.estimate([encode(astronaut())])
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.FacePoseStub(channel)
        request = pb.EstimateRequest(images=[pb.Image(data=encode(astronaut()))])
        with pytest.raises(grpc.RpcError) as wrong:
            stub.Estimate(request, metadata=[("x-api-key", "nope")], timeout=30)
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.Estimate(request, metadata=[("authorization", f"Bearer {KEYS[0]}")],
                              timeout=30)
        assert len(reply.results[0].faces) == 1
        streamed = list(stub.EstimateStream(
            iter([pb.StreamRequest(id="a", image=pb.Image(data=encode(astronaut())))]),
            metadata=[("x-api-key", KEYS[1])], timeout=30))
        assert streamed[0].id == "a"
        with pytest.raises(grpc.RpcError) as unstreamed:
            list(stub.EstimateStream(iter([pb.StreamRequest(id="b")]), timeout=30))
        assert unstreamed.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_protected_health_and_metrics() -> None:
    env = {"FACEPOSE_API_KEYS": KEYS[0], "FACEPOSE_PROTECT_HEALTH_AND_METRICS": "true"}
    with gateway(env, headers={"X-API-Key": KEYS[0]}) as url:
        for path in ("/healthz", "/metrics"):
            assert httpx.get(f"{url}{path}").status_code == 401
            assert httpx.get(f"{url}{path}", headers={"X-API-Key": KEYS[0]}).status_code == 200
