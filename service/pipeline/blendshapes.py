"""Blendshapes: MediaPipe's blendshapes model over FaceMesh V2 landmarks -> 52 named scores a
face, one batched call.

The model takes 146 of V2's 478 landmarks, x and y in image pixels (it centres and scales them
itself, so only a shared unit on both axes matters), and gives ARKit-style scores in [0, 1].
"""

from __future__ import annotations

import numpy as np

from service.metrics import STAGE_SECONDS
from service.pipeline.align import NUM_VERTICES
from service.pipeline.records import Face
from service.runtime.base import InferenceRuntime, infer
from service.wire import BLENDSHAPE_NAMES

BLENDSHAPES_MODEL = "face_blendshapes"

# kLandmarksSubsetIdxs in MediaPipe's face_blendshapes_graph.cc: which of FaceMesh V2's 478
# landmarks the model takes, in its input order.
BLENDSHAPE_LANDMARKS = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39,
    40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80,
    81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133,
    136, 144, 145, 146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160,
    161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246,
    249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295,
    296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334,
    336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382,
    384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454,
    466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)

def run_blendshapes(runtime: InferenceRuntime, landmarks_px: np.ndarray) -> np.ndarray:
    """landmarks_px: (N, 478, 2+) V2 landmarks, image pixels. Returns (N, 52) scores, in
    BLENDSHAPE_NAMES order."""
    if not len(landmarks_px):
        return np.zeros((0, len(BLENDSHAPE_NAMES)))
    points = landmarks_px[:, BLENDSHAPE_LANDMARKS, :2].astype(np.float32)
    outputs = infer(runtime, BLENDSHAPES_MODEL, {"points": np.ascontiguousarray(points)})
    return outputs["blendshapes"].astype(np.float64)


def add_blendshapes(runtime: InferenceRuntime, faces: list[Face]) -> None:
    """Each face's ``blendshapes`` from its landmarks, one call for all. The model reads V2's
    iris points: a face V1 fitted (468 points) gets none."""
    fitted = [f for f in faces if len(f.landmarks_px) > NUM_VERTICES]
    if not fitted:
        return
    with STAGE_SECONDS.labels("blendshapes").time():
        scores = run_blendshapes(runtime, np.stack([f.landmarks_px for f in fitted]))
    for face, face_scores in zip(fitted, scores, strict=True):
        face.blendshapes = face_scores
