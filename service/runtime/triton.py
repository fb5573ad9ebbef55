"""Triton runtime: the same models served by a Triton Inference Server, over gRPC or HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.endpoints import Endpoints, Resolver, parse_servers, resolve_host
from service.errors import BackendUnavailable
from service.metrics import INFERENCE_SERVERS
from service.runtime.base import split_batches
from service.runtime.model_config import ModelSpec, load_model_specs

Protocol = Literal["grpc", "http"]
_NUMPY_TO_TRITON = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16",
                    np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
                    np.dtype(np.uint8): "UINT8"}
# How long a readiness answer is fresh: /readyz and every request ask, Triton need not. Past it
# the answer is checked again in the background, the callers getting the last one meanwhile.
READY_CACHE_S = 0.5
# A retired client is closed this long after the deadline of a call started as it was retired.
RETIRE_SLACK_S = 1.0
# A readiness check's deadline per server (gRPC): a hung server among several must not hold
# up the request that happens to run the check for a whole call deadline.
READY_CHECK_TIMEOUT_S = 1.0


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


def timed_out(exc: Exception) -> bool:
    """Whether ``exc`` says the call ran out of time (the server hung or overloaded)."""
    if isinstance(exc, TimeoutError):
        return True
    from tritonclient.utils import InferenceServerException

    return isinstance(exc, InferenceServerException) and exc.status() in {
        "StatusCode.DEADLINE_EXCEEDED", "504"}


# A call that timed out is sent to one more server, not to every one: each try waits the whole
# deadline, and the request's own deadline (FACEPOSE_REQUEST_TIMEOUT_S) is 3 of them.
MAX_TIMED_OUT_TRIES = 2


class TritonRuntime:
    """Every call has a deadline; a Triton that is down, slow or unloaded raises
    BackendUnavailable, and the next call after it is back succeeds (no restart needed). Any
    other failure (the server refused what was sent) is raised as it came: a bug, answered as
    an internal error.

    ``url`` may name several servers, or a name with several addresses (``service.endpoints``):
    calls go to each address in turn, and one that cannot be reached is skipped for a while,
    its call sent to the next, so that losing a server fails no request.
    """

    def __init__(self, url: str, repository: Path, protocol: Protocol = "grpc",
                 timeout_s: float = 10.0, resolver: Resolver = resolve_host) -> None:
        self.specs: dict[str, ModelSpec] = load_model_specs(repository)
        self.url = url
        self.endpoints = Endpoints(parse_servers(url), resolver)
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._module = _client_module(protocol)
        # The gRPC client is thread-safe: one per address. The HTTP one is not: one per
        # address and thread (kept till close: another thread's cannot be closed safely).
        self._lock = threading.Lock()
        self._shared: dict[str, Any] = {}
        self._retired: list[tuple[float, Any]] = []  # (when to close it, client)
        self._local = threading.local()
        self._every_http_client: list[Any] = []
        self._ready_at = -np.inf
        self._ready: bool | None = None  # None: never checked
        self._checking = threading.Lock()
        self._checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triton-ready")

    def _new_client(self, address: str) -> Any:
        if self.protocol == "grpc":
            return self._module.InferenceServerClient(address)
        return self._module.InferenceServerClient(
            address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)

    def _client(self, address: str) -> Any:
        if self.protocol == "grpc":
            with self._lock:
                if address not in self._shared:
                    self._shared[address] = self._new_client(address)
                return self._shared[address]
        clients: dict[str, Any] = self._local.__dict__.setdefault("clients", {})
        if address not in clients:
            clients[address] = self._new_client(address)
            with self._lock:
                self._every_http_client.append(clients[address])
        return clients[address]

    def _call_options(self) -> dict[str, Any]:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def _on_any_server(self, model: str, call: Callable[[Any], Any]) -> Any:
        """``call(client)`` on the next address in turn for ``model``; where that one cannot
        be reached, on the next, and so on. Raises BackendUnavailable when none answered."""
        addresses = self.endpoints.in_turn(model)
        failures = []
        timeouts = 0
        for address in addresses:
            try:
                return call(self._client(address))
            except Exception as exc:
                if not server_unavailable(exc):
                    raise
                self.endpoints.skip(address)
                self._ready_at = -np.inf
                failures.append(f"{address}: {type(exc).__name__}: {str(exc)[:200]}")
                timeouts += timed_out(exc)
                if timeouts >= MAX_TIMED_OUT_TRIES:
                    break
        raise BackendUnavailable("inference server: " + ("; ".join(failures) or
                                 f"no address found for {self.url}"))

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
            result = self._on_any_server(model, lambda client, request_inputs=request_inputs,
                                         outputs=outputs: client.infer(
                                             model, request_inputs, outputs=outputs,
                                             **self._call_options()))
            chunks.append([result.as_numpy(name) for name in output_names])
        return {name: np.concatenate([chunk[i] for chunk in chunks])
                for i, name in enumerate(output_names)}

    def _server_ready(self, address: str) -> bool:
        """Whether the server at ``address`` is ready with every model ready: two calls (the
        repository index gives every model's state at once)."""
        options = ({"client_timeout": min(self.timeout_s, READY_CHECK_TIMEOUT_S)}
                   if self.protocol == "grpc" else {})
        try:
            client = self._client(address)
            if not client.is_server_ready(**options):
                return False
            index = client.get_model_repository_index(**options)
        except Exception:
            return False
        # One entry per model version: a model is ready where any version is.
        entries = ([(m.name, m.state) for m in index.models] if self.protocol == "grpc"
                   else [(m["name"], m.get("state")) for m in index])
        ready = {name for name, state in entries if state == "READY"}
        return set(self.specs) <= ready

    def is_ready(self) -> bool:
        """Whether some server has every model ready; those that do not are skipped by calls
        until they do.

        Only the first call waits for the servers' answers. Later ones get the last answer
        while a fresh one is asked for in the background: a request must not wait for a hung
        server's readiness check (a second) because its turn came to ask.
        """
        if self._ready is None:
            with self._checking:
                if self._ready is None:
                    self._check()
        elif time.monotonic() - self._ready_at >= READY_CACHE_S and self._checking.acquire(
                blocking=False):
            try:
                self._checker.submit(self._check_and_release)
            except RuntimeError:  # closed
                self._checking.release()
        return bool(self._ready)

    def _check_and_release(self) -> None:
        try:
            self._check()
        finally:
            self._checking.release()

    def _check(self) -> None:
        now = time.monotonic()
        ready = 0
        addresses = self.endpoints.addresses()
        for address in addresses:
            # Not ready: skipped a while. Ready again: no restore, a skip a failed call set
            # runs out by itself (the server may answer checks and still fail calls).
            if self._server_ready(address):
                ready += 1
            else:
                self.endpoints.skip(address)
        INFERENCE_SERVERS.labels("ready").set(ready)
        INFERENCE_SERVERS.labels("unready").set(len(addresses) - ready)
        self._retire_clients_of_others(set(addresses))
        self._ready, self._ready_at = ready > 0, now

    def _retire_clients_of_others(self, addresses: set[str]) -> None:
        """Close the gRPC clients of addresses the names no longer resolve to (pods gone), once
        no call on them can still be running."""
        with self._lock:
            now = time.monotonic()
            for address in [a for a in self._shared if a not in addresses]:
                self._retired.append((now + self.timeout_s + RETIRE_SLACK_S,
                                      self._shared.pop(address)))
            due = [client for at, client in self._retired if at <= now]
            self._retired = [(at, client) for at, client in self._retired if at > now]
        for client in due:
            client.close()

    def close(self) -> None:
        self._checker.shutdown(wait=True)
        with self._lock:
            clients = [*self._shared.values(), *(client for _, client in self._retired),
                       *self._every_http_client]
            self._shared.clear()
            self._retired.clear()
            self._every_http_client.clear()
            self._local.__dict__.pop("clients", None)
        for client in clients:
            client.close()
