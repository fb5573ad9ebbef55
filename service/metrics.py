"""Prometheus metrics, defined once; transports and the pipeline observe them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter(
    "facepose_requests_total", "Requests answered.", ["route", "method", "status"]
)
REQUEST_SECONDS = Histogram(
    "facepose_request_duration_seconds", "Request latency, end to end.", ["route"],
    buckets=_LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "facepose_stage_duration_seconds", "Time spent per pipeline stage and call.", ["stage"],
    buckets=_LATENCY_BUCKETS,
)
FACES_PER_IMAGE = Histogram(
    "facepose_faces_per_image", "Faces returned per image.",
    buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
)
BATCH_SIZE = Histogram(
    "facepose_model_batch_size", "Batch size of each model call.", ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
IMAGE_ERRORS = Counter(
    "facepose_image_errors_total", "Images that failed, by error code.", ["code"]
)
GROUP_IMAGES = Histogram(
    "facepose_batch_images", "Images per pipeline call (concurrent requests grouped).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
GROUP_REQUESTS = Histogram(
    "facepose_batch_requests", "Requests grouped into one pipeline call.",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
