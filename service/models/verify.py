"""Check a converted ONNX model against the original TFLite model run by LiteRT."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

TOLERANCE = 1e-3


class VerificationFailed(RuntimeError):
    pass


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run_litert(tflite_model: bytes, image_nhwc: np.ndarray) -> list[np.ndarray]:
    """Outputs of the TFLite model for a batch of one, each flattened to (1, -1)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_model)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image_nhwc)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).reshape(1, -1)
            for d in interpreter.get_output_details()]


def sample_inputs(size: int, value_range: tuple[float, float], count: int) -> np.ndarray:
    """Deterministic images in the model's input range: noise and smooth gradients.

    Returns: (count, size, size, 3) float32 NHWC.
    """
    rng = np.random.default_rng(20261121)
    low, high = value_range
    noise = rng.uniform(low, high, size=(count, size, size, 3))
    ramp = np.linspace(low, high, size)[None, :, None, None] * np.ones((count, 1, size, 3))
    blend = np.linspace(0, 1, count)[:, None, None, None]
    return (blend * noise + (1 - blend) * ramp).astype(np.float32)


def max_abs_difference(tflite_model: bytes, model: onnx.ModelProto,
                       value_range: tuple[float, float], count: int = 4) -> float:
    """Largest output difference between LiteRT and ONNX Runtime over sample inputs.

    Outputs are matched by their number of values per item.
    """
    session = _session(model)
    name, size = session.get_inputs()[0].name, session.get_inputs()[0].shape[2]
    worst = 0.0
    for image in sample_inputs(size, value_range, count):
        expected = {e.size: e for e in run_litert(tflite_model, image[None])}
        actual = session.run(None, {name: image[None].transpose(0, 3, 1, 2)})
        for output in actual:
            flat = output.reshape(1, -1)
            worst = max(worst, float(np.abs(flat - expected[flat.size]).max()))
    return worst


def batch_difference(model: onnx.ModelProto, value_range: tuple[float, float],
                     batch: int = 5) -> float:
    """Largest difference between one batch-of-N call and N batch-of-1 calls."""
    session = _session(model)
    name, size = session.get_inputs()[0].name, session.get_inputs()[0].shape[2]
    images = sample_inputs(size, value_range, batch).transpose(0, 3, 1, 2)
    batched = session.run(None, {name: images})
    singles = [session.run(None, {name: image[None]}) for image in images]
    return max(
        float(np.abs(batched[k] - np.concatenate([s[k] for s in singles])).max())
        for k in range(len(batched))
    )
