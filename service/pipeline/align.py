"""Align: face regions (centre, side, in-plane angle) and the rotated square crops they give.

A region is a square in the image, turned by ``angle`` (radians, clockwise in the image, i.e.
from the image x axis towards the image y axis) so that the eye line of the face is level in
the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Crop side over the detector box's longer side: MediaPipe's rule for its face-mesh model.
DETECTION_CROP_SCALE = 1.5
NUM_VERTICES = 468  # every face mesh's first points: the canonical face's vertices
# Crop side over the longer side of the box spanned by the 468 landmarks (the tracking rule).
LANDMARK_CROP_SCALE = 1.5
# Mesh vertices of the outer eye corners, the subject's right then left.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


@dataclass
class Regions:
    """N square regions in image pixels."""

    centres: np.ndarray  # (N, 2) x, y
    sides: np.ndarray  # (N,)
    angles: np.ndarray  # (N,) radians

    def __len__(self) -> int:
        return len(self.sides)

    def take(self, index: np.ndarray) -> Regions:
        return Regions(self.centres[index], self.sides[index], self.angles[index])


def eye_line_angle(right_eye: np.ndarray, left_eye: np.ndarray) -> np.ndarray:
    """Angle of the line from the subject's right eye to the left eye. (N, 2) each -> (N,)."""
    delta = left_eye - right_eye
    return np.arctan2(delta[:, 1], delta[:, 0])


def regions_from_detections(boxes: np.ndarray, keypoints: np.ndarray) -> Regions:
    """boxes: (N, 4) x1, y1, x2, y2; keypoints: (N, 6, 2), the eyes first."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = np.max(boxes[:, 2:] - boxes[:, :2], axis=1) * DETECTION_CROP_SCALE
    angles = eye_line_angle(keypoints[:, 0], keypoints[:, 1])
    return Regions(centres, sides, angles)


def regions_from_landmarks(landmarks: np.ndarray) -> Regions:
    """Regions around meshes already fitted. landmarks: (N, P, 2+) image pixels, the 468 face
    points first (V2's iris points after them, NaN where V1 fitted the face, lie inside)."""
    points = landmarks[:, :NUM_VERTICES, :2]
    angles = eye_line_angle(points[:, RIGHT_EYE_OUTER], points[:, LEFT_EYE_OUTER])
    cos, sin = np.cos(angles), np.sin(angles)
    # Into each face's eye-aligned frame, take the box there, and bring its centre back.
    to_face = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], axis=1)
    aligned = np.einsum("nij,nkj->nki", to_face, points)
    low, high = aligned.min(axis=1), aligned.max(axis=1)
    centres = np.einsum("nji,nj->ni", to_face, (low + high) / 2)
    sides = np.max(high - low, axis=1) * LANDMARK_CROP_SCALE
    return Regions(centres, sides, angles)


def crop_to_image_transforms(regions: Regions, crop_size: int) -> np.ndarray:
    """Affine maps from crop pixels to image pixels. Returns (N, 2, 3)."""
    pixel = regions.sides / crop_size
    cos, sin = np.cos(regions.angles) * pixel, np.sin(regions.angles) * pixel
    linear = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], axis=1)
    offset = regions.centres - linear @ np.array([crop_size / 2, crop_size / 2])
    return np.concatenate([linear, offset[:, :, None]], axis=2)


def crop_regions(image: np.ndarray, regions: Regions, crop_size: int) -> np.ndarray:
    """Rotated square crops resampled to crop_size. image: (H, W, 3) uint8.

    Returns: (N, crop_size, crop_size, 3) uint8.
    """
    crops = np.zeros((len(regions), crop_size, crop_size, 3), np.uint8)
    for i, crop_to_image in enumerate(crop_to_image_transforms(regions, crop_size)):
        image_to_crop = cv2.invertAffineTransform(crop_to_image)
        cv2.warpAffine(
            image, image_to_crop, (crop_size, crop_size), dst=crops[i],
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        )
    return crops


def crop_points_to_image(points: np.ndarray, crop_to_image: np.ndarray) -> np.ndarray:
    """Map crop-pixel points (with a depth column in crop pixels) into the image.

    points: (N, P, 3) x, y, z in crop pixels; crop_to_image: (N, 2, 3).
    Returns: (N, P, 3) x, y in image pixels and z in image pixels (same scale as x).
    """
    xy = np.einsum("nij,npj->npi", crop_to_image[:, :, :2], points[..., :2])
    xy += crop_to_image[:, None, :, 2]
    pixel = np.sqrt(np.abs(np.linalg.det(crop_to_image[:, :, :2])))
    return np.concatenate([xy, points[..., 2:3] * pixel[:, None, None]], axis=2)
