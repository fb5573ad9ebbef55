"""Iris: eye crops from fitted meshes -> iris centre and edge points, one batched call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.pipeline.align import (
    Regions,
    crop_points_to_image,
    crop_regions,
    crop_to_image_transforms,
    eye_line_angle,
)
from service.runtime.base import InferenceRuntime, infer

IRIS_MODEL = "iris"
MESH_IRISES = slice(468, 478)  # FaceMesh V2's iris points among its 478
IRIS_POINTS = 5  # centre, then four points on the edge
CONTOUR_POINTS = 71
# Mesh vertices at the eye corners, each pair ordered image-left to image-right.
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)
# Eye crop side over the corner-to-corner distance, as the iris model was trained.
EYE_CROP_SCALE = 2.3


@dataclass
class Iris:
    centre: np.ndarray  # (2,) image pixels
    contour: np.ndarray  # (4, 2) image pixels
    radius_px: float


@dataclass
class IrisPair:
    right: Iris  # the subject's right eye
    left: Iris


def eye_regions(landmarks: np.ndarray, corners: tuple[int, int]) -> Regions:
    """landmarks: (N, 468, 2+) image pixels."""
    start, end = landmarks[:, corners[0], :2], landmarks[:, corners[1], :2]
    side = np.linalg.norm(end - start, axis=1) * EYE_CROP_SCALE
    return Regions((start + end) / 2, side, eye_line_angle(start, end))


def run_iris(runtime: InferenceRuntime, image: np.ndarray, landmarks: np.ndarray
             ) -> list[IrisPair]:
    """Both eyes of every face of one image in one call. landmarks: (N, 468, 3) image pixels."""
    if not len(landmarks):
        return []
    spec = runtime.specs[IRIS_MODEL]
    image_input = spec.image_input
    size = image_input.size
    regions = [eye_regions(landmarks, RIGHT_EYE_CORNERS), eye_regions(landmarks, LEFT_EYE_CORNERS)]
    crops = np.concatenate([crop_regions(image, r, size) for r in regions])
    # The model knows one eye only: the subject's left eye is mirrored into it and back.
    faces = len(landmarks)
    crops[faces:] = crops[faces:, :, ::-1]
    outputs = infer(runtime, IRIS_MODEL, {image_input.name: image_input.batch(crops)})
    points = outputs[spec.output_with_size(IRIS_POINTS * 3).name].reshape(-1, IRIS_POINTS, 3)
    points = points.astype(np.float64)
    points[faces:, :, 0] = size - points[faces:, :, 0]
    transforms = np.concatenate([crop_to_image_transforms(r, size) for r in regions])
    image_points = crop_points_to_image(points, transforms)[..., :2]
    return [IrisPair(iris_from_points(right), iris_from_points(left))
            for right, left in zip(image_points[:faces], image_points[faces:], strict=True)]


def iris_from_points(points: np.ndarray) -> Iris:
    """points: (5, 2+) the centre, then four points on the edge."""
    points = points[:, :2]
    return Iris(points[0], points[1:], float(np.linalg.norm(points[1:] - points[0],
                                                             axis=1).mean()))


def face_irises(runtime: InferenceRuntime, image: np.ndarray,
                landmarks: list[np.ndarray]) -> list[IrisPair]:
    """Each face's irises, in order: those FaceMesh V2 fitted with the face (478 landmarks,
    points 468-472 the subject's right iris, 473-477 its left) as they are, no model call; the
    others' (468) from the iris model, one call for all of them.

    landmarks: per face (468 or 478, 2+) image pixels."""
    fitted = [len(face) > MESH_IRISES.start for face in landmarks]
    measured = iter(run_iris(runtime, image, np.stack(
        [face for face, has in zip(landmarks, fitted, strict=True) if not has]))
        if not all(fitted) else [])
    return [IrisPair(iris_from_points(face[MESH_IRISES][:IRIS_POINTS]),
                     iris_from_points(face[MESH_IRISES][IRIS_POINTS:]))
            if has else next(measured) for face, has in zip(landmarks, fitted, strict=True)]
