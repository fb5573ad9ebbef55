"""Mesh: a batched face-mesh model over crops -> landmarks per face and a presence score.

Two models: MediaPipe's face mesh (V1, 192 px crops, 468 points) and FaceMesh V2 (the
FaceLandmarker's, 256 px crops, the same 468 points then 10 iris points). A preset picks one.
"""

from __future__ import annotations

import numpy as np

from service.pipeline.scores import sigmoid
from service.runtime.base import InferenceRuntime, infer

MESH_V1 = "face_mesh"
MESH_V2 = "face_mesh_v2"


def mesh_input_size(runtime: InferenceRuntime, model: str) -> int:
    return runtime.specs[model].image_input.size


def mesh_points(runtime: InferenceRuntime, model: str) -> int:
    """How many landmarks the model gives a face: 468, or 478 with the irises."""
    return runtime.specs[model].output("landmarks").dims[0]


def run_mesh(runtime: InferenceRuntime, crops: np.ndarray, model: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """One batched call for all crops.

    crops: (N, S, S, 3) uint8 RGB, S the model's input size.
    Returns: landmarks (N, P, 3) x, y, z in crop pixels (P = ``mesh_points``; z: depth relative
    to the face, smaller is nearer the camera) and presence (N,) in [0, 1].
    """
    points = mesh_points(runtime, model)
    if not len(crops):
        return np.zeros((0, points, 3)), np.zeros(0)
    spec = runtime.specs[model]
    image_input = spec.image_input
    outputs = infer(runtime, model, {image_input.name: image_input.batch(crops)})
    presence = sigmoid(outputs["presence"].reshape(-1))
    return outputs["landmarks"].reshape(-1, points, 3).astype(np.float64), presence
