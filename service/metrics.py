"""Prometheus metrics, defined once; transports, batcher, pipeline and runtimes observe them.

Names follow Prometheus conventions: `facepose_` prefix, base units, `_total` counters.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from service import __version__

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

REQUESTS = Counter(
    "facepose_requests_total", "Requests answered, by route, transport and status code.",
    ["route", "transport", "code"],
)
REQUEST_SECONDS = Histogram(
    "facepose_request_duration_seconds", "Request latency, end to end.", ["route", "transport"],
    buckets=_LATENCY_BUCKETS,
)
REQUESTS_IN_FLIGHT = Gauge(
    "facepose_requests_in_flight", "Requests being handled now.", ["transport"],
)
STAGE_SECONDS = Histogram(
    "facepose_stage_duration_seconds",
    "Time per pipeline stage and call: decode, detect, crop, mesh, solve, mirror, iris, "
    "blendshapes, serialize, and queue (waiting for the batcher).",
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
