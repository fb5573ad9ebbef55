"""Prometheus metrics, defined once; transports, batcher, pipeline and runtimes observe them.

Names follow Prometheus conventions: `facepose_` prefix, base units, `_total` counters.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram, Info

from service import __version__

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)



class Outcome(StrEnum):
    """How a request ended, in words every transport shares: ``facepose_requests_total``'s
    ``outcome`` adds up across REST, gRPC and WebSocket. Each transport's own status (HTTP
    status, gRPC code, close code) is in a metric of its own."""

    OK = "ok"
    CLIENT_ERROR = "client_error"  # refused for what it carried: fix the request, not retry
    OVERLOADED = "overloaded"  # shed: retry later (429, Retry-After)
    TIMEOUT = "timeout"  # a deadline passed: the body's, the client's or the server's
    UNAVAILABLE = "unavailable"  # not ready, the inference server down, or shutting down
    SERVER_ERROR = "server_error"  # a fault of ours
    CANCELLED = "cancelled"  # the client went away first


def outcome_of_status(status: int) -> Outcome:
    """The outcome an HTTP status (or a refusal's ``status``, on any transport) says."""
    if status < 400:
        return Outcome.OK
    return {408: Outcome.TIMEOUT, 429: Outcome.OVERLOADED, 503: Outcome.UNAVAILABLE,
            504: Outcome.TIMEOUT}.get(
        status, Outcome.CLIENT_ERROR if status < 500 else Outcome.SERVER_ERROR)


REQUESTS = Counter(
    "facepose_requests_total",
    "Requests answered, by route, transport (http, grpc, websocket) and outcome: ok, "
    "client_error, overloaded, timeout, unavailable, server_error or cancelled.",
    ["route", "transport", "outcome"],
)
HTTP_RESPONSES = Counter(
    "facepose_http_responses_total", "HTTP responses, by route and status.", ["route", "status"],
)
GRPC_CALLS = Counter(
    "facepose_grpc_calls_total", "gRPC calls finished, by method and status code name.",
    ["method", "code"],
)
WEBSOCKET_CLOSES = Counter(
    "facepose_websocket_closes_total",
    "WebSocket streams ended, by close code (1000 normal, 1008 a protocol or option error, "
    "1011 a fault of ours, 1013 overloaded, 4401 unauthorized, 4408 idle; 1005 and 1006 the "
    "client left without a code or a close).", ["code"],
)
REQUEST_SECONDS = Histogram(
    "facepose_request_duration_seconds", "Request latency, end to end.", ["route", "transport"],
    buckets=_LATENCY_BUCKETS,
)
REQUESTS_IN_FLIGHT = Gauge(
    "facepose_requests_in_flight", "Requests being handled now.", ["transport"],
)
# The stages ``facepose_stage_duration_seconds`` times, in a request's order (queue: waiting
# for the batcher; smooth: a stream's filters; render: an overlay's drawing and encoding).
STAGES = ("queue", "decode", "detect", "crop", "mesh", "solve", "mirror", "iris", "blendshapes",
          "smooth", "serialize", "render")
STAGE_SECONDS = Histogram(
    "facepose_stage_duration_seconds",
    f"Time per pipeline stage and call: {', '.join(STAGES)}.",
    ["stage"], buckets=_LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "facepose_queue_depth_images", "Images waiting for the batcher.",
)
FACES_PER_IMAGE = Histogram(
    "facepose_faces_per_image", "Faces returned per image.",
    buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
)
BATCH_SIZE = Histogram(
    "facepose_model_batch_size", "Batch size of each model call.", ["model"],
    buckets=_COUNT_BUCKETS,
)
GROUP_IMAGES = Histogram(
    "facepose_batch_images", "Images per pipeline call (concurrent requests grouped).",
    buckets=_COUNT_BUCKETS,
)
GROUP_REQUESTS = Histogram(
    "facepose_batch_requests", "Requests grouped into one pipeline call.",
    buckets=_COUNT_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "facepose_inference_duration_seconds", "Inference runtime call latency.",
    ["runtime", "model"], buckets=_LATENCY_BUCKETS,
)
INFERENCE_FAILURES = Counter(
    "facepose_inference_failures_total",
    "Inference runtime calls that failed: reason unavailable (the server down or too slow) or "
    "error (a bug: the call itself refused).",
    ["runtime", "model", "reason"],
)
INFERENCE_INPUT_BYTES = Counter(
    "facepose_inference_input_bytes_total",
    "Bytes of the input tensors sent to the inference runtime (over the network with Triton).",
    ["runtime", "model"],
)
INFERENCE_SERVERS = Gauge(
    "facepose_inference_servers",
    "Addresses of the Triton servers FACEPOSE_TRITON_URL names, by state at the last check: "
    "ready (every model ready) or unready (down, loading, or not answering).",
    ["state"],
)
INFLIGHT_BYTES = Gauge(
    "facepose_inflight_bytes", "Memory held by requests now, as the in-flight budget counts it.",
)
INFLIGHT_BUDGET_BYTES = Gauge(
    "facepose_inflight_budget_bytes", "The in-flight memory budget (FACEPOSE_MAX_INFLIGHT_MB).",
)
ADMISSION_REJECTED = Counter(
    "facepose_admission_rejected_total", "Requests refused at once because the service was full.",
    ["transport"],
)
IMAGE_ERRORS = Counter(
    "facepose_image_errors_total", "Images that failed, by error code.", ["code"],
)
BACKEND_READY = Gauge(
    "facepose_backend_ready", "1 while the inference runtime is ready, else 0.",
)
STREAMS_OPEN = Gauge(
    "facepose_streams_open", "Video streams open now (WebSocket /v1/stream, gRPC Track).",
    ["transport"],
)
STREAMS_REJECTED = Counter(
    "facepose_streams_rejected_total",
    "Video streams refused because FACEPOSE_STREAM_MAX_STREAMS were open.", ["transport"],
)
STREAM_FRAMES = Counter(
    "facepose_stream_frames_total",
    "Video stream frames answered, by outcome: tracked (face-mesh model only), detected (the "
    "detector ran as well) or error.", ["transport", "outcome"],
)
STREAM_DETECTOR_RUNS = Counter(
    "facepose_stream_detector_runs_total",
    "Detector runs in video streams, by reason: first frame, a track lost, no face tracked, "
    "or the periodic search for new faces.", ["reason"],
)
BUILD = Info("facepose_build", "Version of the service and the runtime it uses.")
MODEL_INFO = Gauge(
    "facepose_model_info", "Models loaded, with the sha256 of each ONNX file (value 1).",
    ["model", "sha256"],
)


def describe_build(runtime: str, model_hashes: dict[str, str]) -> None:
    BUILD.info({"version": __version__, "runtime": runtime})
    for model, sha256 in model_hashes.items():
        MODEL_INFO.labels(model, sha256).set(1)
