"""A rolling update loses nothing: on SIGTERM the gateway fails readiness and keeps answering for
its drain window, every response saying `Connection: close`; then it stops listening, finishes
what is in flight and exits 0. Eight keep-alive clients sending photos throughout get an answer
to every request they sent (a refused connection is not a request sent)."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.clients import GrpcClient
from tests.conftest import free_port, gateway_process
from tests.images import astronaut, encode

DRAIN_S = 3.0
# The clients stop starting requests this long after the signal: a load balancer has by then
# seen readiness fail and sends elsewhere.
CLIENTS_STOP_AFTER_S = 2.0
CLIENTS = 8


@dataclass
class Tally:
    answered: Counter[int] = field(default_factory=Counter)
    closes_said: int = 0  # answers after the signal that said Connection: close
    answered_after_signal: int = 0
    refused_connections: int = 0
    lost: list[str] = field(default_factory=list)  # sent, then no answer
    lock: threading.Lock = field(default_factory=threading.Lock)


def keep_sending(url: str, photo: bytes, tally: Tally, signalled: threading.Event,
                 stop_at: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop_at or time.monotonic() < stop_at[0]:
            after_signal = signalled.is_set()
            try:
                response = http.post("/v1/faces", content=photo,
                                     headers={"Content-Type": "image/jpeg"})
            except httpx.ConnectError:
                with tally.lock:
                    tally.refused_connections += 1
                time.sleep(0.05)
                continue
            except httpx.TransportError as error:  # sent, and reset or closed unanswered
                with tally.lock:
                    tally.lost.append(f"{type(error).__name__}: {error}")
                continue
            with tally.lock:
                tally.answered[response.status_code] += 1
                if after_signal:
                    tally.answered_after_signal += 1
                    tally.closes_said += response.headers.get("connection") == "close"
            if response.status_code == 503:
                assert response.json()["error"]["code"] == "shutting_down"


@pytest.mark.slow
def test_sigterm_drains_without_losing_a_request() -> None:
    grpc_port = free_port()
    env = {"FACEPOSE_DRAIN_S": str(DRAIN_S), "FACEPOSE_SHUTDOWN_GRACE_S": "15",
           "FACEPOSE_GRPC_PORT": str(grpc_port)}
    photo = encode(astronaut())
    with gateway_process(env) as (url, process):
        tally, signalled, stop_at = Tally(), threading.Event(), []
        senders = [threading.Thread(target=keep_sending,
                                    args=(url, photo, tally, signalled, stop_at))
                   for _ in range(CLIENTS)]
        for sender in senders:
            sender.start()
        time.sleep(1.5)  # every client's connection kept alive and in use
        signalled_at = time.monotonic()
        stop_at.append(signalled_at + CLIENTS_STOP_AFTER_S)
        process.send_signal(signal.SIGTERM)
        signalled.set()
        # Within the window: not ready, still answering, over gRPC too.
        time.sleep(1.2)
        assert httpx.get(f"{url}/readyz").status_code == 503
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with GrpcClient(f"127.0.0.1:{grpc_port}") as rpc:
            (entry,) = rpc.estimate([photo])
        assert len(entry["faces"]) == 1
        for sender in senders:
            sender.join(timeout=60)
        # Past the window the listener is closed, and the process exits cleanly.
        time.sleep(max(0.0, signalled_at + DRAIN_S + 0.5 - time.monotonic()))
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)
        assert process.wait(timeout=30) == 0
    assert tally.lost == [], tally.lost
    assert tally.answered_after_signal >= CLIENTS, tally
    assert tally.closes_said == tally.answered_after_signal, tally
    assert set(tally.answered) <= {200, 503}, tally.answered
