"""Service settings, read once from the environment (prefix ``FACEPOSE_``)."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.endpoints import parse_servers

REPO_ROOT = Path(__file__).resolve().parent.parent


class Quality(StrEnum):
    """The pipeline preset: fast (fewest model calls), balanced, accurate (every step)."""

    # Declared beside the settings, whose default is one of them; service.pipeline.presets
    # says what each runs.
    FAST = "fast"
    BALANCED = "balanced"
    ACCURATE = "accurate"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEPOSE_")

    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 50051  # 0: no gRPC server
    model_repository: Path = REPO_ROOT / "model_repository"
    runtime: Literal["embedded", "triton"] = "embedded"
    # host:port of Triton's gRPC (or HTTP) endpoint; several comma-separated, or a name with
    # several addresses (a headless Service): calls are spread over all (service.endpoints).
    triton_url: str = "127.0.0.1:8001"
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_timeout_s: float = Field(default=10.0, gt=0)

    # Grouping of concurrent requests into one pipeline call.
    batch_max_images: int = Field(default=32, ge=1)
    batch_max_wait_ms: float = Field(default=2.0, ge=0)
    batch_workers: int = Field(default=2, ge=1)
    retry_after_s: int = 5
    # On SIGTERM: for this long the gateway is not ready but answers everything, each response
    # saying Connection: close, while load balancers stop sending; longer than
    # keep_alive_timeout_s, so that no connection idle since before the signal is left to close
    # under a request. Then it stops listening (gRPC: GOAWAY).
    drain_s: float = Field(default=6.0, ge=0)
    # After the drain: how long requests in flight may take to finish before the process exits.
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    ort_intra_op_threads: int = Field(default=1, ge=0)
    # Embedded runtime: items of a batch run this many at a time. One: on the CPU a batch's
    # activations outgrow the cache (on one core a batch of 8 cost 2.8 ms per face-mesh item
    # against 1.8 ms singly). Batching still pays on Triton and on a GPU.
    ort_batch_chunk: int = Field(default=1, ge=1)
    # Embedded runtime: the models run by LiteRT instead of ONNX Runtime, where the build
    # installed their TFLite original. FaceMesh V2: 6.0 ms a crop against 7.9 (2-core AMD EPYC,
    # one thread), the same landmarks; the other models gained less than 0.5 ms a call.
    embedded_litert_models: list[str] = ["face_mesh_v2"]
    # OpenCV's own thread pool competes with the request threads for the cores: one thread
    # saved about 1 ms a request on two cores (the gateway's process only).
    opencv_threads: int = Field(default=1, ge=0)
    # Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale while the longer side stays at least
    # this many pixels (the detectors see 128 and 192; a face that would reach the mesh model
    # upsampled is decoded again finer). High enough that a 1080p frame, whose faces are often
    # small, is decoded once at full size rather than twice.
    decode_working_side: int = Field(default=1280, ge=1)

    # Limits on what a client may send; checked before anything expensive.
    max_body_bytes: int = 32 * 1024 * 1024
    max_images_per_request: int = 32
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    max_faces_per_image: int = 32
    max_boxes_per_image: int = 64
    # Requests in the service at once (all transports); more are refused with 429 at once.
    # A request takes its slot once its body is read.
    max_in_flight_requests: int = Field(default=64, ge=1)
    # Memory requests may hold at once, in MB: bodies as they arrive, then decoded images (see
    # service/app/admission.py). Past it, 429 at once; one request larger than all of it, 413.
    # Unset: from the container's memory limit (cgroup memory.max) where there is one, else
    # DEFAULT_INFLIGHT_MB.
    max_inflight_mb: int | None = Field(default=None, ge=16)
    # Reading a request body may take this long plus a second per BODY_READ_MIN_BYTES_PER_S
    # bytes declared; past it, 408 and the connection is closed.
    body_read_timeout_s: float = Field(default=5.0, gt=0)
    body_read_min_bytes_per_s: int = Field(default=1_000_000, ge=1)
    # HTTP connections (service/http/connections.py): open at once, past which uvicorn answers
    # 503; seconds a request's head may take to arrive; seconds a kept-alive connection may
    # sit idle.
    max_connections: int = Field(default=1000, ge=1)
    head_read_timeout_s: float = Field(default=10.0, gt=0)
    keep_alive_timeout_s: float = Field(default=5.0, gt=0)
    # Server-side deadline of each request, queueing included.
    request_timeout_s: float = Field(default=30.0, gt=0)

    # Access: API keys (none = open), and whether /healthz, /readyz, /metrics and gRPC health
    # and reflection need one too.
    api_keys: str = ""
    api_keys_file: Path | None = None
    protect_health_and_metrics: bool = False
    # Browser origins allowed by CORS, comma-separated ("*" for any); empty: CORS off.
    cors_origins: str = ""

    # Video streams (WebSocket /v1/stream, gRPC Track). Streams open at once, all transports
    # together (more are refused); frames of one stream read but not yet answered (the next is
    # not read until one is: the client's sends wait); seconds without a message before a
    # stream is closed; the detector's period in frames when the client does not choose one.
    stream_max_streams: int = Field(default=16, ge=1)
    stream_max_frames_in_flight: int = Field(default=4, ge=1)
    stream_idle_timeout_s: float = Field(default=30.0, gt=0)
    stream_detect_every: int = Field(default=10, ge=1)
    # gRPC EstimateStream: images of one stream estimated at once; more wait for a free slot.
    estimate_stream_max_in_flight: int = Field(default=8, ge=1)

    # Defaults for the request options of the same names.
    default_max_faces: int = 16
    default_min_score: float = 0.5
    default_min_presence: float = 0.5
    default_quality: Quality = Quality.BALANCED
    # Field of view across the longer image side used when the client gives no intrinsics.
    default_fov_deg: float = 40.0

    @field_validator("triton_url")
    @classmethod
    def _servers_parse(cls, value: str) -> str:
        parse_servers(value)  # a malformed list stops start-up with what is wrong in it
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
