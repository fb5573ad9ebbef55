from __future__ import annotations

import numpy as np
import pytest

from service.pipeline.solve import (
    Camera,
    default_camera,
    euler_pitch_yaw_roll_deg,
    load_canonical_face,
    mean_rotation,
    quaternion_wxyz,
    rotation_from_euler_deg,
    solve_pose,
    translation_for_rotation,
)

CAMERA = Camera(fx=800.0, fy=790.0, cx=330.0, cy=235.0, source="request")
POSES = [  # pitch, yaw, roll degrees; translation mm
    (0.0, 0.0, 0.0, (0.0, 0.0, 600.0)),
    (12.0, -35.0, 8.0, (-40.0, 25.0, 550.0)),
    (-25.0, 60.0, -20.0, (60.0, -30.0, 900.0)),
    (5.0, 80.0, 3.0, (0.0, 10.0, 450.0)),
    (30.0, -70.0, 45.0, (-80.0, 50.0, 1200.0)),
]


def _project(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    camera_points = points @ rotation.T + translation
    projected = camera_points @ CAMERA.matrix.T
    return projected[:, :2] / projected[:, 2:]


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = (np.trace(a.T @ b) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


@pytest.mark.parametrize(("pitch", "yaw", "roll", "translation"), POSES)
def test_pnp_recovers_known_pose(pitch: float, yaw: float, roll: float,
                                 translation: tuple[float, float, float]) -> None:
    model = load_canonical_face().vertices_mm
    rotation = rotation_from_euler_deg(pitch, yaw, roll)
    pixels = _project(model, rotation, np.array(translation))
    pose = solve_pose(pixels, model, CAMERA)
    assert angle_between_deg(pose.r_cam_from_model, rotation) < 0.1
    assert np.linalg.norm(pose.t_cam_from_model_mm - translation) < 1.0
    assert pose.reprojection_rmse_px < 1e-3
    assert np.allclose(euler_pitch_yaw_roll_deg(pose.r_cam_from_model), (pitch, yaw, roll),
                       atol=0.1)


def test_euler_round_trip() -> None:
    rng = np.random.default_rng(0)
    for pitch, yaw, roll in rng.uniform([-80, -85, -80], [80, 85, 80], size=(50, 3)):
        got = euler_pitch_yaw_roll_deg(rotation_from_euler_deg(pitch, yaw, roll))
        assert np.allclose(got, (pitch, yaw, roll), atol=1e-9)


def test_euler_signs_follow_the_label_convention() -> None:
    model = load_canonical_face().vertices_mm
    nose_tip = model[load_canonical_face().landmarks68[30]]
    centre = np.array([0.0, 0.0, 500.0])

    def nose_image_x(yaw: float) -> float:
        return _project(nose_tip[None], rotation_from_euler_deg(0, yaw, 0), centre)[0, 0]

    def nose_image_y(pitch: float) -> float:
        return _project(nose_tip[None], rotation_from_euler_deg(pitch, 0, 0), centre)[0, 1]

    # +yaw moves the nose to image left; +pitch (head up) moves it up in the image.
    assert nose_image_x(20) < nose_image_x(0)
    assert nose_image_y(20) < nose_image_y(0)
    # +roll turns the eye line clockwise in the image (y down): the left eye (image right) drops.
    right_eye, left_eye = model[load_canonical_face().landmarks68[[36, 45]]]
    eyes = _project(np.stack([right_eye, left_eye]), rotation_from_euler_deg(0, 0, 20), centre)
    assert eyes[1, 1] > eyes[0, 1]
    assert eyes[0, 0] < eyes[1, 0]


def test_quaternion_matches_rotation() -> None:
    rng = np.random.default_rng(1)
    for angles in rng.uniform(-170, 170, size=(50, 3)):
        rotation = rotation_from_euler_deg(*angles)
        w, x, y, z = quaternion_wxyz(rotation)
        expected = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ])
        assert w >= 0
        assert np.allclose(expected, rotation, atol=1e-9)


def test_default_camera_has_documented_field_of_view() -> None:
    camera = default_camera(640, 480, 60.0)
    assert camera.source == "default"
    assert (camera.cx, camera.cy) == (320.0, 240.0)
    assert np.degrees(2 * np.arctan(320.0 / camera.fx)) == pytest.approx(60.0)


def test_translation_for_a_known_rotation_is_exact() -> None:
    model = load_canonical_face().vertices_mm
    rotation = rotation_from_euler_deg(10, -40, 5)
    translation = np.array([30.0, -20.0, 700.0])
    pixels = _project(model, rotation, translation)
    assert np.allclose(translation_for_rotation(rotation, pixels, model, CAMERA), translation,
                       atol=1e-6)


def test_mean_rotation_lies_halfway() -> None:
    a, b = rotation_from_euler_deg(0, 20, 0), rotation_from_euler_deg(0, 60, 0)
    assert euler_pitch_yaw_roll_deg(mean_rotation(a, b))[1] == pytest.approx(40.0)


def test_weighted_mean_rotation_moves_from_one_end_to_the_other() -> None:
    a, b = rotation_from_euler_deg(0, 20, 0), rotation_from_euler_deg(0, 60, 0)
    yaws = [euler_pitch_yaw_roll_deg(mean_rotation(a, b, w))[1] for w in (0.0, 0.25, 1.0)]
    assert yaws[0] == pytest.approx(20.0) and yaws[2] == pytest.approx(60.0)
    assert 20.0 < yaws[1] < 40.0
