"""Inference runtimes behind one small interface (see ``base.InferenceRuntime``)."""

from __future__ import annotations

from service.config import Settings
from service.runtime.base import InferenceRuntime


def create_runtime(settings: Settings) -> InferenceRuntime:
    """The runtime named by ``settings.runtime``."""
    if settings.runtime == "embedded":
        from service.runtime.embedded import EmbeddedRuntime

        return EmbeddedRuntime(settings.model_repository, settings.ort_intra_op_threads,
                               settings.ort_batch_chunk, settings.embedded_litert_models)
    if settings.runtime == "triton":
        from service.runtime.triton import TritonRuntime

        return TritonRuntime(settings.triton_url, settings.model_repository,
                             settings.triton_protocol, settings.triton_timeout_s)
    raise ValueError(f"unknown runtime {settings.runtime!r}")
