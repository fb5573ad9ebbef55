"""Read a Triton ``config.pbtxt``: the single statement of a model's tensors and batch limit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

_NUMPY_DTYPES = {
    model_config_pb2.TYPE_FP32: np.float32,
    model_config_pb2.TYPE_FP16: np.float16,
    model_config_pb2.TYPE_INT32: np.int32,
    model_config_pb2.TYPE_INT64: np.int64,
    model_config_pb2.TYPE_UINT8: np.uint8,
}


# Beside model.onnx where the build installs it: the TFLite original, and how to feed it (JSON:
# "input_range", the pixel range it takes; "outputs", its outputs' names in TFLite order).
LITERT_MODEL = "model.tflite"
LITERT_FEED = "litert.json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dims: tuple[int, ...]  # without the batch dimension
    dtype: type[np.generic]


@dataclass(frozen=True)
class ImageInput:
    """A square RGB image input, as declared in a model's config: the pixels as decoded
    (uint8), scaled inside the model."""

    name: str
    size: int
    channels_first: bool
    dtype: type[np.generic]

    def batch(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> the layout and type the model takes."""
        if images.dtype != self.dtype:
            raise TypeError(f"{self.name}: the model takes {np.dtype(self.dtype)} pixels, "
                            f"got {images.dtype}")
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if self.channels_first else images


@dataclass(frozen=True)
class ModelSpec:
    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def image_input(self) -> ImageInput:
        """The model's one input, read as a square RGB image (NCHW or NHWC)."""
        (tensor,) = self.inputs
        channels_first = tensor.dims[0] == 3
        size = tensor.dims[1] if channels_first else tensor.dims[0]
        return ImageInput(tensor.name, size, channels_first, tensor.dtype)

    def output(self, name: str) -> TensorSpec:
        """The output called ``name``."""
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise ValueError(f"{self.name}: no output {name!r} in {[o.name for o in self.outputs]}")

    def output_with_size(self, size: int) -> TensorSpec:
        """The one output holding ``size`` values per batch item."""
        matches = [o for o in self.outputs if int(np.prod(o.dims)) == size]
        if len(matches) != 1:
            raise ValueError(f"{self.name}: expected one output of size {size}, got {matches}")
        return matches[0]


def _tensor(message: model_config_pb2.ModelInput | model_config_pb2.ModelOutput) -> TensorSpec:
    return TensorSpec(message.name, tuple(message.dims), _NUMPY_DTYPES[message.data_type])


def parse_model_config(text: str) -> ModelSpec:
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    return ModelSpec(
        name=config.name,
        max_batch_size=config.max_batch_size,
        inputs=tuple(_tensor(i) for i in config.input),
        outputs=tuple(_tensor(o) for o in config.output),
    )


def load_model_specs(repository: Path) -> dict[str, ModelSpec]:
    """Every model in a Triton model repository, by name."""
    specs = [
        parse_model_config(path.read_text()) for path in sorted(repository.glob("*/config.pbtxt"))
    ]
    return {spec.name: spec for spec in specs}


def model_hashes(repository: Path) -> dict[str, str]:
    """sha256 of each built model.onnx, from the manifests the model build writes."""
    hashes = {}
    for manifest in sorted(repository.glob("*/1/manifest.json")):
        try:
            hashes[manifest.parent.parent.name] = json.loads(manifest.read_text())["onnx_sha256"]
        except (ValueError, KeyError):
            continue
    return hashes
