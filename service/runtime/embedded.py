"""Embedded runtime: ONNX Runtime sessions in the gateway process."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.runtime.base import split_batches
from service.runtime.model_config import ModelSpec, load_model_specs

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


class EmbeddedRuntime:
    def __init__(self, repository: Path, intra_op_threads: int = 1, batch_chunk: int = 1) -> None:
        """batch_chunk: items of a batch run at a time (``Settings.ort_batch_chunk``)."""
        self.batch_chunk = batch_chunk
        self.specs: dict[str, ModelSpec] = load_model_specs(repository)
        options = _session_options(intra_op_threads)
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL_ITEMS,
                                        thread_name_prefix="onnxruntime-item")
        self._sessions: dict[str, ort.InferenceSession] = {}
        for name in self.specs:
            model_path = repository / name / "1" / "model.onnx"
            if not model_path.exists():
                raise FileNotFoundError(f"{model_path} is missing: run `facepose models build`")
            self._sessions[name] = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            )

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self.specs[model]
        session = self._sessions[model]
        output_names = [o.name for o in spec.outputs]
        batch_size = len(next(iter(inputs.values())))

        def run(part: slice) -> list[np.ndarray]:
            return session.run(output_names, {name: array[part] for name, array in inputs.items()})

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
        self._sessions.clear()
