"""The interface the pipeline calls; each runtime (embedded ONNX Runtime, Triton) implements it."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from service.errors import BackendUnavailable
from service.metrics import (
    BATCH_SIZE,
    INFERENCE_FAILURES,
    INFERENCE_INPUT_BYTES,
    INFERENCE_SECONDS,
)
from service.runtime.model_config import ModelSpec


class InferenceRuntime(Protocol):
    specs: dict[str, ModelSpec]

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batched call; every array's first axis is the batch, of any size >= 1."""
        ...

    def is_ready(self) -> bool:
        """Whether calls can be served. Only the first call may wait (for a server's
        answer); later ones answer at once, from what the runtime last learnt, as every
        request asks."""
        ...

    def close(self) -> None: ...


def split_batches(batch_size: int, max_batch_size: int) -> list[slice]:
    """Slices covering ``range(batch_size)`` in chunks a model with that limit accepts."""
    step = max(1, max_batch_size)
    return [slice(start, min(start + step, batch_size)) for start in range(0, batch_size, step)]


def infer(runtime: InferenceRuntime, model: str, inputs: dict[str, np.ndarray]
          ) -> dict[str, np.ndarray]:
    """``runtime.infer`` with its batch size, latency and failures recorded; the pipeline
    calls this."""
    kind = type(runtime).__name__.removesuffix("Runtime").lower()
    BATCH_SIZE.labels(model).observe(len(next(iter(inputs.values()))))
    INFERENCE_INPUT_BYTES.labels(kind, model).inc(sum(a.nbytes for a in inputs.values()))
    try:
        with INFERENCE_SECONDS.labels(kind, model).time():
            return runtime.infer(model, inputs)
    except BackendUnavailable:
        INFERENCE_FAILURES.labels(kind, model, "unavailable").inc()
        raise
    except Exception:
        INFERENCE_FAILURES.labels(kind, model, "error").inc()
        raise
