"""Building the model repository: fetch pinned packages, convert TFLite to ONNX, verify.

Entry points: ``service.model_build.build.build_models`` and
``python -m service.model_build.build``.
"""

from __future__ import annotations


class ModelBuildError(RuntimeError):
    """A model build step failed; the message says which file or check and why."""
