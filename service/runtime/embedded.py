"""Embedded runtime: ONNX Runtime sessions in the gateway process, and LiteRT interpreters for
the models where it is faster.

FaceMesh V2 under LiteRT (XNNPACK), one thread, one crop: 6.0 ms against ONNX Runtime's 7.9
(V1: 2.6), the same landmarks within 1e-3 px (the model build checks that). LiteRT runs the
TFLite original the build installs beside model.onnx; Triton serves the ONNX model.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.runtime.base import split_batches
from service.runtime.model_config import LITERT_FEED, LITERT_MODEL, ModelSpec, load_model_specs

# The items of one call run side by side on this many cores at most (sessions are thread-safe
# and release the GIL), so that the faces of one lone image do not queue behind each other.
PARALLEL_ITEMS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                               else os.cpu_count() or 1))


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Spinning pools of several sessions fight over few cores and double the latency.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's CPU arena keeps the largest batch's buffers for good; without it the
    # gateway's memory after a burst went from 389 to 310 MB at no measured cost per image.
    options.enable_cpu_mem_arena = False
    return options


Runner = Callable[[Sequence[str], dict[str, np.ndarray]], list[np.ndarray]]


@contextlib.contextmanager
def _stderr_discarded() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside (native libraries write there, not to
    sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LiteRTModel:
    """A TFLite model run by LiteRT, called like an ONNX Runtime session: uint8 NHWC pixels in,
    the config's outputs out, any batch (items one at a time, as the model takes them).

    An interpreter is not thread-safe, and each holds its own buffers (12.5 MB for FaceMesh
    V2): a fixed set of them is made at start-up, and a call takes one for its duration,
    waiting if all are busy. Memory is then what the idle process shows, whatever the load.
    invoke() releases the GIL, so two calls run two crops at once.
    """

    def __init__(self, directory: Path, spec: ModelSpec, interpreters: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        model = (directory / LITERT_MODEL).read_bytes()
        feed = json.loads((directory / LITERT_FEED).read_text())
        low, high = feed["input_range"]
        self._scale, self._offset = (high - low) / 255.0, low
        self._order: list[str] = feed["outputs"]
        self._dims = {o.name: o.dims for o in spec.outputs}
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # LiteRT prints one line to stderr the first time a process makes an interpreter
        # ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."), which would break the
        # gateway's one-JSON-object-per-line log: stderr points away while they are made, at
        # start-up.
        with _stderr_discarded():
            for _ in range(interpreters):
                interpreter = Interpreter(model_content=model, num_threads=1)
                interpreter.allocate_tensors()
                self._free.put(interpreter)

    def run(self, output_names: Sequence[str], inputs: dict[str, np.ndarray]
            ) -> list[np.ndarray]:
        interpreter = self._free.get()
        try:
            return self._run(interpreter, output_names, inputs)
        finally:
            self._free.put(interpreter)

    def _run(self, interpreter: Any, output_names: Sequence[str],
             inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        (images,) = inputs.values()
        (image_input,) = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        results: dict[str, list[np.ndarray]] = {name: [] for name in self._order}
        for image in images:
            scaled = image[None].astype(np.float32) * np.float32(self._scale)
            interpreter.set_tensor(image_input["index"], scaled + np.float32(self._offset))
            interpreter.invoke()
            for name, detail in zip(self._order, outputs, strict=True):
                results[name].append(interpreter.get_tensor(detail["index"])
                                     .reshape(1, *self._dims[name]))
        return [np.concatenate(results[name]) for name in output_names]


class EmbeddedRuntime:
    def __init__(self, repository: Path, intra_op_threads: int = 1, batch_chunk: int = 1,
                 litert_models: Sequence[str] = ()) -> None:
        """batch_chunk: items of a batch run at a time (``Settings.ort_batch_chunk``);
        litert_models: those run by LiteRT (``Settings.embedded_litert_models``)."""
        self.batch_chunk = batch_chunk
        self.specs: dict[str, ModelSpec] = load_model_specs(repository)
        options = _session_options(intra_op_threads)
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL_ITEMS,
                                        thread_name_prefix="onnxruntime-item")
        self._runners: dict[str, Runner] = {}
        for name in self.specs:
            directory = repository / name / "1"
            if name in litert_models and (directory / LITERT_MODEL).exists():
                self._runners[name] = LiteRTModel(directory, self.specs[name],
                                                  PARALLEL_ITEMS).run
                continue
            model_path = directory / "model.onnx"
            if not model_path.exists():
                raise FileNotFoundError(f"{model_path} is missing: run `facepose models build`")
            self._runners[name] = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            ).run

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.specs[model]
        runner = self._runners[model]
        output_names = [o.name for o in spec.outputs]
        batch_size = len(next(iter(inputs.values())))

        def run(part: slice) -> list[np.ndarray]:
            return runner(output_names, {name: array[part] for name, array in inputs.items()})

        parts = split_batches(batch_size, min(self.batch_chunk, spec.max_batch_size))
        chunks = list(self._pool.map(run, parts)) if len(parts) > 1 else [run(p) for p in parts]
        return {
            name: np.concatenate([chunk[i] for chunk in chunks])
            for i, name in enumerate(output_names)
        }

    def is_ready(self) -> bool:
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._runners.clear()
