"""Mesh: batched face-mesh model over crops -> 468 landmarks per face and a presence score."""

from __future__ import annotations

import numpy as np

from service.pipeline.scores import sigmoid
from service.runtime.base import InferenceRuntime, infer

NUM_VERTICES = 468
MESH_MODEL = "face_mesh"


def mesh_input_size(runtime: InferenceRuntime) -> int:
    return runtime.specs[MESH_MODEL].image_input.size


def run_mesh(runtime: InferenceRuntime, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One batched call for all crops.

    crops: (N, S, S, 3) uint8 RGB.
    Returns: landmarks (N, 468, 3) x, y, z in crop pixels (z: depth relative to the face,
    smaller is nearer the camera) and presence (N,) in [0, 1].
    """
    if not len(crops):
        return np.zeros((0, NUM_VERTICES, 3)), np.zeros(0)
    spec = runtime.specs[MESH_MODEL]
    image_input = spec.image_input
    outputs = infer(runtime, MESH_MODEL, {image_input.name: image_input.batch(crops)})
    landmarks = outputs[spec.output_with_size(NUM_VERTICES * 3).name]
    logits = outputs[spec.output_with_size(1).name]
    presence = sigmoid(logits.reshape(-1))
    return landmarks.reshape(-1, NUM_VERTICES, 3).astype(np.float64), presence
