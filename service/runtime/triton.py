"""Triton runtime: the same models served by a Triton Inference Server, over gRPC or HTTP."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.errors import BackendUnavailable
from service.runtime.base import split_batches
from service.runtime.model_config import ModelSpec, load_model_specs

Protocol = Literal["grpc", "http"]
_NUMPY_TO_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16",
                    np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
                    np.dtype(np.uint8): "UINT8"}
# How long a readiness answer is reused: /readyz and every request ask, Triton need not.
READY_CACHE_S = 1.0


# What the client reports when the server is down, restarting, overloaded or too slow, rather
# than that this call was wrong: gRPC status names, and the HTTP client's status codes.
UNAVAILABLE_STATUSES = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED",
                                  "503", "504"})


def server_unavailable(exc: Exception) -> bool:
    """Whether ``exc`` from a Triton call says the server could not be reached or answered too
    late (retry, maybe elsewhere), not that facepose sent something wrong (a bug)."""
    if isinstance(exc, OSError | TimeoutError):  # refused, reset, a socket's timeout
        return True
    from tritonclient.utils import InferenceServerException

    return isinstance(exc, InferenceServerException) and exc.status() in UNAVAILABLE_STATUSES


def _client_module(protocol: Protocol) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


class TritonRuntime:
    """Every call has a deadline; a Triton that is down, slow or unloaded raises
    BackendUnavailable, and the next call after it is back succeeds (no restart needed). Any
    other failure (the server refused what was sent) is raised as it came: a bug, answered as
    an internal error."""

    def __init__(self, url: str, repository: Path, protocol: Protocol = "grpc",
                 timeout_s: float = 10.0) -> None:
        self.specs: dict[str, ModelSpec] = load_model_specs(repository)
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._module = _client_module(protocol)
        # The gRPC client is thread-safe; the HTTP one is not, so each thread gets its own.
        self._local = threading.local()
        self._ready_at = -np.inf
        self._ready = False

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._module.InferenceServerClient(self.url)
            else:
                client = self._module.InferenceServerClient(
                    self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
            self._local.client = client
        return client

    def _call_options(self) -> dict[str, Any]:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.specs[model]
        output_names = [o.name for o in spec.outputs]
        batch_size = len(next(iter(inputs.values())))
        chunks = []
        for part in split_batches(batch_size, spec.max_batch_size):
            request_inputs = []
            for name, array in inputs.items():
                piece = np.ascontiguousarray(array[part])
                tensor = self._module.InferInput(name, list(piece.shape),
                                                 _NUMPY_TO_TRITON[piece.dtype])
                tensor.set_data_from_numpy(piece)
                request_inputs.append(tensor)
            outputs = [self._module.InferRequestedOutput(name) for name in output_names]
            try:
                result = self._client().infer(model, request_inputs, outputs=outputs,
                                              **self._call_options())
            except Exception as exc:
                if not server_unavailable(exc):
                    raise
                self._ready_at = -np.inf
                raise BackendUnavailable(f"inference server: {type(exc).__name__}: "
                                         f"{str(exc)[:200]}") from exc
            chunks.append([result.as_numpy(name) for name in output_names])
        return {name: np.concatenate([chunk[i] for chunk in chunks])
                for i, name in enumerate(output_names)}

    def is_ready(self) -> bool:
        now = time.monotonic()
        if now - self._ready_at < READY_CACHE_S:
            return self._ready
        try:
            client = self._client()
            options = self._call_options()
            ready = bool(client.is_server_ready(**options)) and all(
                client.is_model_ready(name, **options) for name in self.specs)
        except Exception:
            ready = False
        self._ready, self._ready_at = ready, now
        return ready

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None
