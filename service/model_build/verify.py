"""Check a converted ONNX model against the original TFLite model run by LiteRT."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from service.model_build import ModelBuildError
from service.model_build.sources import ModelSource

TOLERANCE = 1e-3  # ONNX Runtime vs LiteRT, absolute, any output value
BATCH_TOLERANCE = 1e-4  # one batch of N vs N batches of one


class VerificationFailed(ModelBuildError):
    pass


def session_for(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run_litert(tflite_model: bytes, images: np.ndarray) -> list[np.ndarray]:
    """The TFLite model's outputs, one image at a time (as MediaPipe runs it).

    images: (N, S, S, 3) float32, or any model input batch. Returns each output as (N, values
    per item).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_model)
    interpreter.allocate_tensors()
    (image_input,) = interpreter.get_input_details()
    results: list[list[np.ndarray]] = [[] for _ in interpreter.get_output_details()]
    for image in images:
        interpreter.set_tensor(image_input["index"], image[None])
        interpreter.invoke()
        for result, detail in zip(results, interpreter.get_output_details(), strict=True):
            result.append(interpreter.get_tensor(detail["index"]).reshape(1, -1))
    return [np.concatenate(result) for result in results]


def random_inputs(size: int, count: int) -> np.ndarray:
    """Deterministic images, from smooth gradient to pure noise.

    Returns: (count, size, size, 3) uint8 NHWC, as the converted models take them.
    """
    rng = np.random.default_rng(20261121)
    noise = rng.uniform(0, 255, size=(count, size, size, 3))
    ramp = np.linspace(0, 255, size)[None, :, None, None] * np.ones((count, 1, size, 3))
    blend = np.linspace(0, 1, count)[:, None, None, None]
    return np.rint(blend * noise + (1 - blend) * ramp).astype(np.uint8)


def astronaut_input(box: tuple[int, int, int, int], size: int) -> np.ndarray | None:
    """A crop of skimage's astronaut photo, or None without scikit-image.

    Returns: (1, size, size, 3) uint8 RGB.
    """
    try:
        from skimage import data
    except ImportError:
        return None
    import cv2

    x0, y0, x1, y1 = box
    return cv2.resize(data.astronaut()[y0:y1, x0:x1], (size, size),
                      interpolation=cv2.INTER_AREA)[None]


def verification_inputs(source: ModelSource, random_count: int = 4) -> np.ndarray:
    """Random images plus, where scikit-image is installed, a real one.

    Returns: (N, S, S, 3) uint8 NHWC.
    """
    images = [random_inputs(source.input_size, random_count)]
    real = astronaut_input(source.sample_box, source.input_size)
    if real is not None:
        images.append(real)
    return np.concatenate(images)


def points_verification_inputs(source: ModelSource, mesh_model: bytes) -> np.ndarray:
    """Face points as the blendshapes model gets them: a face mesh (the TFLite ``mesh_model``,
    run by LiteRT) fitted to the astronaut, in photo pixels; moved, scaled, mirrored and jittered
    copies; and random point clouds. Returns (N, source.input_size, 2) float32."""
    from ai_edge_litert.interpreter import Interpreter

    from service.pipeline.blendshapes import BLENDSHAPE_LANDMARKS

    interpreter = Interpreter(model_content=mesh_model)
    interpreter.allocate_tensors()
    (image_input,) = interpreter.get_input_details()
    size = int(image_input["shape"][1])
    crop = astronaut_input(source.sample_box, size)
    rng = np.random.default_rng(20261206)
    clouds = rng.uniform(0, 500, size=(3, source.input_size, 2))
    if crop is None:
        return clouds.astype(np.float32)
    interpreter.set_tensor(image_input["index"], crop.astype(np.float32) / 255.0)
    interpreter.invoke()
    points = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(-1, 3)
    x0, y0, x1, _ = source.sample_box
    face = points[list(BLENDSHAPE_LANDMARKS), :2] * (x1 - x0) / size + (x0, y0)
    mirrored = face * (-1, 1) + (512, 0)
    faces = [face, face * 1.7 + 40, mirrored, face + rng.normal(0, 1.5, face.shape)]
    return np.concatenate([np.stack(faces), clouds]).astype(np.float32)


def to_model_range(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """uint8 pixels as the TFLite model takes them: float32 in ``value_range``."""
    low, high = value_range
    return (low + (high - low) * images.astype(np.float32) / 255.0).astype(np.float32)


def litert_differences(tflite_model: bytes, session: ort.InferenceSession, images: np.ndarray,
                       source: ModelSource) -> dict[str, float]:
    """Largest |ONNX Runtime - LiteRT| per output over ``images`` (N, S, S, 3) uint8: the
    ONNX model takes them as they are, LiteRT scaled to the source's input range.

    TFLite outputs are matched to the source's outputs by their number of values per item, or
    by their order where the source says so.
    """
    litert = run_litert(tflite_model, images if source.points_from
                        else to_model_range(images, source.input_range))
    if source.outputs_in_order:
        expected = dict(zip([spec.name for spec in source.outputs], litert, strict=True))
    else:
        by_size = {result.shape[1]: result for result in litert}
        expected = {spec.name: by_size[spec.size] for spec in source.outputs}
    names = [spec.name for spec in source.outputs]
    actual = dict(zip(names, session.run(names, {session.get_inputs()[0].name: images}),
                      strict=True))
    return {
        spec.name: float(np.abs(actual[spec.name].reshape(len(images), -1)
                                - expected[spec.name]).max())
        for spec in source.outputs
    }


def batch_difference(session: ort.InferenceSession, images: np.ndarray) -> float:
    """Largest difference between one batch-of-N call and N batch-of-1 calls.

    images: (N, S, S, 3). Also fails if the batched outputs do not have N items.
    """
    name = session.get_inputs()[0].name
    batched = session.run(None, {name: images})
    singles = [session.run(None, {name: image[None]}) for image in images]
    worst = 0.0
    for k, whole in enumerate(batched):
        if whole.shape[0] != len(images):
            raise VerificationFailed(f"batch of {len(images)} gave {whole.shape[0]} results")
        worst = max(worst, float(np.abs(whole - np.concatenate([s[k] for s in singles])).max()))
    return worst
