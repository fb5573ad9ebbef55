from __future__ import annotations

import numpy as np

from service.pipeline.align import (
    Regions,
    crop_points_to_image,
    crop_regions,
    crop_to_image_transforms,
    regions_from_landmarks,
)
from service.pipeline.detect import (
    ANCHOR_LAYOUTS,
    Detections,
    letterbox,
    make_anchors,
    weighted_nms,
)


def test_anchor_counts_match_the_models() -> None:
    assert len(make_anchors(ANCHOR_LAYOUTS["face_detector_short"], 128)) == 896
    assert len(make_anchors(ANCHOR_LAYOUTS["face_detector_full"], 192)) == 2304


def test_weighted_nms_merges_overlaps_and_keeps_apart_faces() -> None:
    boxes = np.array([[10, 10, 50, 50], [12, 12, 52, 52], [100, 100, 140, 140]], float)
    keypoints = np.repeat(boxes[:, None, :2], 6, axis=1)
    merged = weighted_nms(Detections(boxes, keypoints, np.array([0.9, 0.6, 0.8])))
    assert len(merged) == 2
    assert merged.scores.tolist() == [0.9, 0.8]
    assert np.allclose(merged.boxes[0], [10.8, 10.8, 50.8, 50.8])


def test_letterbox_maps_back_to_the_image() -> None:
    image = np.zeros((100, 300, 3), np.uint8)
    image[40:60, 140:160] = 255
    square, to_image = letterbox(image, 150)
    ys, xs = np.nonzero(square[..., 0] > 128)
    centre = to_image @ np.array([xs.mean(), ys.mean(), 1.0])
    assert np.allclose(centre, [150, 50], atol=1.5)


def test_crop_and_map_back_round_trip_with_rotation() -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    image[95:105, 130:140] = 255  # a bright square right of the centre
    regions = Regions(np.array([[100.0, 100.0]]), np.array([120.0]), np.array([np.pi / 2]))
    crop = crop_regions(image, regions, 64)
    ys, xs = np.nonzero(crop[0, ..., 0] > 128)
    # Turned by 90 degrees, the crop's x axis runs down the image: the square is straight up.
    assert xs.mean() < 40 and abs(ys.mean() - 32) > 10
    back = crop_points_to_image(np.array([[[xs.mean(), ys.mean(), 0.0]]]),
                                crop_to_image_transforms(regions, 64))
    assert np.allclose(back[0, 0, :2], [134.5, 99.5], atol=1.5)


def test_landmark_regions_are_level_with_the_eyes() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(-40, 40, size=(1, 468, 3))
    points[0, 33, :2], points[0, 263, :2] = [-30, -10], [30, 10]
    regions = regions_from_landmarks(points + np.array([200.0, 100.0, 0.0]))
    assert np.isclose(regions.angles[0], np.arctan2(20, 60))
    assert regions.sides[0] > 80 * 1.5 * 0.9
