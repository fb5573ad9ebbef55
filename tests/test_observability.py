"""Metrics, alerts, dashboard, logs and shutdown, checked with real Prometheus tools."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, SERVER_ENV, free_port, wait_until
from tests.images import astronaut, encode

JPEG = {"Content-Type": "image/jpeg"}
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "facepose-dashboard.json"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package `prometheus`; `make test` installs "
                    "it where apt-get is available)")
    return path


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run([tool("promtool"), "check", "rules", str(ALERTS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    names = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
             for rule in group["rules"]}
    assert {"FaceposeHighErrorRate", "FaceposeHighLatency", "FaceposeNotReady"} <= names


def test_real_metrics_pass_promtool(client: httpx.Client) -> None:
    client.post("/v1/faces", content=encode(astronaut()), headers=JPEG)
    scrape = client.get("/metrics").text
    result = subprocess.run([tool("promtool"), "check", "metrics"], input=scrape,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("facepose_requests_total", "facepose_request_duration_seconds_bucket",
                 "facepose_stage_duration_seconds_bucket", "facepose_model_batch_size_bucket",
                 "facepose_faces_per_image_bucket", "facepose_requests_in_flight",
                 "facepose_queue_depth_images", "facepose_inference_duration_seconds_bucket",
                 "facepose_build_info", "facepose_model_info", "facepose_backend_ready"):
        assert f"\n{name}" in scrape, name
    for stage in ("decode", "detect", "mesh", "solve", "serialize", "queue"):
        assert f'stage="{stage}"' in scrape, stage


def counts(scrape: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of counter ``name``: sorted label pairs to value."""
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(scrape)
            for sample in family.samples if sample.name == name}


def test_each_transport_is_counted_in_labels_that_add_up(client: httpx.Client,
                                                         server_url: str,
                                                         grpc_target: str) -> None:
    """One outcome vocabulary across REST, gRPC and WebSocket, each transport's own status in a
    metric of its own; /openapi.json counted under its route."""
    import grpc
    import websocket

    from service.clients import GrpcClient
    from service.metrics import Outcome

    client.get("/openapi.json")
    client.post("/v1/faces", content=encode(astronaut()), headers=JPEG, params={"fx": -1})
    with GrpcClient(grpc_target) as rpc, pytest.raises(grpc.RpcError):
        rpc.estimate([encode(astronaut())], min_score=3.0)
    ws = websocket.create_connection(server_url.replace("http://", "ws://") + "/v1/stream",
                                     timeout=30)
    ws.close()
    deadline = time.monotonic() + 10
    while True:
        scrape = client.get("/metrics").text
        requests = counts(scrape, "facepose_requests_total")
        if any(dict(k)["transport"] == "websocket" for k in requests):
            break
        assert time.monotonic() < deadline, requests
        time.sleep(0.2)
    labels = [dict(k) for k in requests]
    assert {"route", "transport", "outcome"} == set(labels[0])
    assert {label["outcome"] for label in labels} <= {o.value for o in Outcome}
    assert requests[(("outcome", "ok"), ("route", "/openapi.json"), ("transport", "http"))] >= 1
    assert requests[(("outcome", "client_error"), ("route", "/v1/faces"),
                     ("transport", "http"))] >= 1
    assert requests[(("outcome", "client_error"), ("route", "/facepose.v1.FacePose/Estimate"),
                     ("transport", "grpc"))] >= 1
    assert any(label["transport"] == "websocket" and label["outcome"] == "ok"
               for label in labels)
    http = counts(scrape, "facepose_http_responses_total")
    assert http[(("route", "/v1/faces"), ("status", "422"))] >= 1
    calls = counts(scrape, "facepose_grpc_calls_total")
    assert calls[(("code", "INVALID_ARGUMENT"), ("method", "/facepose.v1.FacePose/Estimate"))] >= 1
    closes = counts(scrape, "facepose_websocket_closes_total")
    assert any(dict(k)["code"] in ("1000", "1005") for k in closes), closes


def test_dashboard_and_alerts_use_real_metric_names(client: httpx.Client) -> None:
    scrape = client.get("/metrics").text
    # Declared families count too: a labelled counter has no sample before its first event.
    exported = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            suffixes = ("_bucket", "_sum", "_count", "") if kind == "histogram" else ("",)
            exported |= {name + suffix for suffix in suffixes}
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [rule["expr"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
                    for rule in group["rules"]]
    used = {m for e in expressions for m in re.findall(r"\bfacepose_[a-z_]+", e)}
    assert used and used <= exported, used - exported


def test_prometheus_scrapes_the_gateway(server_url: str, tmp_path: Path) -> None:
    prometheus = tool("prometheus")
    target = server_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "facepose", "static_configs": [{"targets": [target]}]}],
    }))
    port = free_port()
    process = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(f"http://127.0.0.1:{port}/-/ready", process, timeout=30)
        for _ in range(3):
            httpx.post(f"{server_url}/v1/faces", content=encode(astronaut()), headers=JPEG,
                       timeout=30)
        deadline = time.monotonic() + 30
        query = 'sum(facepose_requests_total{route="/v1/faces",outcome="ok"})'
        while True:
            reply = httpx.get(f"http://127.0.0.1:{port}/api/v1/query",
                              params={"query": query}).json()
            results = reply["data"]["result"]
            if results and float(results[0]["value"][1]) >= 3:
                break
            assert time.monotonic() < deadline, reply
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_request_id_is_returned_and_logged_without_image_bytes(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**SERVER_ENV, "FACEPOSE_PORT": str(port), "FACEPOSE_GRPC_PORT": "0"}
    with log.open("w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO,
                                   env={**__import__("os").environ, **env}, stderr=handle)
    try:
        wait_until(f"http://127.0.0.1:{port}/readyz", process)
        data = encode(astronaut())
        given = httpx.post(f"http://127.0.0.1:{port}/v1/faces", content=data,
                           headers={**JPEG, "X-Request-ID": "trace-42"})
        made = httpx.post(f"http://127.0.0.1:{port}/v1/faces", content=data, headers=JPEG)
        assert given.headers["X-Request-ID"] == "trace-42"
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    requests = [e for e in entries if e.get("msg") == "request" and e["route"] == "/v1/faces"]
    assert {e["request_id"] for e in requests} == {"trace-42", made.headers["X-Request-ID"]}
    for entry in requests:
        assert {"method", "route", "status", "duration_ms", "transport"} <= set(entry)
    text = log.read_text()
    assert "landmarks" not in text and "JFIF" not in text and len(text) < 20_000


def in_flight_http(url: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "facepose_requests_in_flight" and \
                    sample.labels.get("transport") == "http":
                return sample.value
    return 0.0


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_then_exits_0() -> None:
    port = free_port()
    env = {**__import__("os").environ, **SERVER_ENV, "FACEPOSE_PORT": str(port),
           "FACEPOSE_GRPC_PORT": "0", "FACEPOSE_SHUTDOWN_GRACE_S": "30"}
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=REPO, env=env,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until(f"{url}/readyz", process)
    # A slow request: eight 1080p images of several faces, with every optional output.
    tile = cv2.resize(astronaut(), (360, 360))
    crowd = np.tile(tile, (3, 5, 1))[:1080, :1800]
    files = [("images", (f"{i}.jpg", encode(crowd), "image/jpeg")) for i in range(8)]
    outcome: dict[str, httpx.Response] = {}
    finished_at: list[float] = []

    def send() -> None:
        outcome["response"] = httpx.post(f"{url}/v1/faces", files=files, timeout=120,
                                         params={"include": "mesh,landmarks,iris,visibility"})
        finished_at.append(time.monotonic())

    sender = threading.Thread(target=send)
    sender.start()
    # In flight: the gauge counts it beside the scrape asking.
    deadline = time.monotonic() + 30
    while in_flight_http(url) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    terminated_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    sender.join(timeout=120)
    assert process.wait(timeout=60) == 0
    response = outcome["response"]
    assert finished_at[0] > terminated_at  # it really was in flight when SIGTERM came
    assert response.status_code == 200
    assert all(entry["faces"] for entry in response.json()["images"])
