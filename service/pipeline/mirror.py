"""Mirror images, detections and poses left to right.

A second fit on the mirrored image, mirrored back and averaged with the first, cancels the
models' left/right biases; that matters on turned faces.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from service.pipeline.align import Regions
from service.pipeline.solve import Camera, load_canonical_face

# Camera-frame reflection x -> -x; the canonical face is symmetric under it.
REFLECT_X = np.diag([-1.0, 1.0, 1.0])
# Detector keypoints after mirroring: the subject's right eye becomes the left, and so on.
KEYPOINT_SWAP = [1, 0, 2, 3, 5, 4]


def mirror_x(x: np.ndarray, width: int) -> np.ndarray:
    """x in pixel-centre coordinates, as image[:, ::-1] moves it."""
    return (width - 1) - x


def mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2."""
    return np.stack([mirror_x(boxes[:, 2], width), boxes[:, 1],
                     mirror_x(boxes[:, 0], width), boxes[:, 3]], axis=1)


def mirror_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """(N, 6, 2) detector keypoints, subject sides swapped."""
    mirrored = keypoints[:, KEYPOINT_SWAP].copy()
    mirrored[..., 0] = mirror_x(mirrored[..., 0], width)
    return mirrored


# FaceMesh V2's iris points (468-477: each eye's centre, then its image-right, top,
# image-left and bottom edge) after mirroring: the other eye, its right and left edges swapped.
IRIS_MIRROR_ORDER = (473, 476, 475, 474, 477, 468, 471, 470, 469, 472)


@lru_cache(maxsize=2)
def vertex_mirror_order(points: int = 468) -> np.ndarray:
    """(points,) for each mesh vertex, its mirror twin across the face's midline (itself on
    it); 478 points: V2's irises too."""
    vertices = load_canonical_face().vertices_mm
    reflected = vertices @ REFLECT_X
    distance = np.linalg.norm(reflected[:, None] - vertices[None], axis=2)
    order = np.argmin(distance, axis=1)
    return order if points == len(vertices) else np.concatenate([order, IRIS_MIRROR_ORDER])


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """(..., P, 3) mesh landmarks (P 468, or 478 with V2's irises) in image pixels, subject
    sides swapped; depth unchanged."""
    mirrored = landmarks[..., vertex_mirror_order(landmarks.shape[-2]), :].copy()
    mirrored[..., 0] = mirror_x(mirrored[..., 0], width)
    return mirrored


def mirror_regions(regions: Regions, width: int) -> Regions:
    centres = regions.centres.copy()
    centres[:, 0] = mirror_x(centres[:, 0], width)
    return Regions(centres, regions.sides.copy(), -regions.angles)


def mirror_camera(camera: Camera, width: int) -> Camera:
    return Camera(camera.fx, camera.fy, float(mirror_x(np.float64(camera.cx), width)),
                  camera.cy, camera.source)


def unmirror_rotation(r_mirrored: np.ndarray) -> np.ndarray:
    """The rotation a face has, given the rotation its mirror image has. (3, 3) -> (3, 3)."""
    return REFLECT_X @ r_mirrored @ REFLECT_X
