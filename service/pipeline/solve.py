"""Solve: 2D landmarks + the canonical 3D face -> 6DoF pose by PnP, and pose representations.

Frames. The canonical face model is stored with x to the subject's left (image right for a face
looking at the camera), y up, z toward the viewer. The service works in OpenCV's camera axes
(x right, y down, z forward), so the model is turned once by F = diag(1, -1, -1); in that
"model_cv" frame a face looking straight into the camera has ``r_cam_from_model = I``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np

MODEL_TO_CV_AXES = np.diag([1.0, -1.0, -1.0])


# Below this face-presence score the mesh's landmarks no longer fix the pose.
MESH_TRUSTED_PRESENCE = 0.5
# From the first yaw the detector keypoints' pose is blended into the mesh's, its weight growing
# linearly to take over at the second: past it the mesh's far side is all guesswork and its yaw
# no longer grows with the turn. A ramp, not a switch, so that the pose has no jump.
KEYPOINTS_FROM_YAW_DEG, KEYPOINTS_ONLY_YAW_DEG = 25.0, 55.0

# The ear tragions lie outside the face mesh: just behind its side edge (vertices 234, 454),
# which puts them 152 mm apart and 130 mm from the nose tip, as adult head measurements have it.
TRAGION_MODEL_MM = np.array([[-76.0, 5.0, -32.0], [76.0, 5.0, -32.0]])


@dataclass(frozen=True)
class CanonicalFace:
    vertices_mm: np.ndarray  # (468, 3) in the model_cv frame
    triangles: np.ndarray  # (T, 3) int vertex indices
    landmarks68: np.ndarray  # (68,) vertex indices in iBUG 300-W order
    keypoints_mm: np.ndarray  # (6, 3) the detector's six keypoints, model_cv frame


@lru_cache(maxsize=1)
def load_canonical_face() -> CanonicalFace:
    with resources.files("service.data").joinpath("canonical_face.npz").open("rb") as handle:
        data = np.load(handle)
        model = data["vertices_mm"]
        vertices = model @ MODEL_TO_CV_AXES.T
        keypoints = np.stack([
            model[[33, 133]].mean(axis=0),  # right eye centre
            model[[362, 263]].mean(axis=0),  # left eye centre
            model[1],  # nose tip
            model[[13, 14]].mean(axis=0),  # mouth centre
            *TRAGION_MODEL_MM,
        ])
        return CanonicalFace(
            vertices_mm=vertices,
            triangles=data["triangles"].astype(np.int32),
            landmarks68=data["landmarks68"].astype(np.int64),
            keypoints_mm=keypoints @ MODEL_TO_CV_AXES.T,
        )


class KeypointUse(StrEnum):
    """How a face's pose uses the detector keypoints' own fit."""

    TURNED = "turned"  # blended into the mesh's on turned faces, taking over at profiles
    NEVER = "never"  # the mesh's rotation as fitted (a face the mesh lost still takes theirs)
    ALWAYS = "always"  # the keypoints' rotation; the mesh gives the translation


class DegeneratePose(ValueError):
    """The points admit no pose (too few distinct points, or none in front of the camera)."""


@dataclass(frozen=True)
class Camera:
    fx: float
    fy: float
    cx: float
    cy: float
    source: str  # "request" or "default"

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) intrinsic matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def default_camera(width: int, height: int, fov_deg: float) -> Camera:
    """A pinhole camera with ``fov_deg`` across the longer image side, centred principal point."""
    focal = max(width, height) / (2.0 * np.tan(np.radians(fov_deg) / 2.0))
    return Camera(focal, focal, width / 2.0, height / 2.0, "default")


@dataclass(frozen=True)
class PoseEvidence:
    """The separate fits a face's pose was made from, kept to tell how far to trust it: where
    they disagree, the pose is less sure. Each (3, 3) r_cam_from_model, None if not fitted."""

    from_mesh: np.ndarray | None = None  # PnP of the 468 mesh landmarks
    from_keypoints: np.ndarray | None = None  # PnP of the detector's six keypoints
    from_mirror: np.ndarray | None = None  # the mirrored image's fit, unmirrored


@dataclass(frozen=True)
class Pose:
    r_cam_from_model: np.ndarray  # (3, 3)
    t_cam_from_model_mm: np.ndarray  # (3,)
    reprojection_rmse_px: float
    evidence: PoseEvidence = PoseEvidence()


def solve_pose(
    image_points: np.ndarray, model_points: np.ndarray, camera: Camera
) -> Pose:
    """Rigid pose of the model that best reprojects onto the image points.

    image_points: (K, 2) pixels; model_points: (K, 3) mm in the model_cv frame.
    """
    objects = np.ascontiguousarray(model_points, dtype=np.float64)
    pixels = np.ascontiguousarray(image_points, dtype=np.float64)
    intrinsics = camera.matrix
    rvec = tvec = None
    # SQPnP finds the global minimum without an initial guess but refuses points that span a
    # tiny angle (a small face seen through a long lens); EPnP then takes over.
    for flags in (cv2.SOLVEPNP_SQPNP, cv2.SOLVEPNP_EPNP):
        try:
            ok, rvec, tvec = cv2.solvePnP(objects, pixels, intrinsics, None, flags=flags)
        except cv2.error:
            ok = False
        if ok:
            break
    if not ok or rvec is None or tvec is None:
        # Points collapsed onto a line or a point (a box of a pixel or two) have no pose.
        raise DegeneratePose("no pose fits these points")
    # SQPnP minimises an error in object space, up to 1.7 degrees from the reprojection
    # optimum on real landmarks. OpenCV's iterative solver, started there, reaches the same
    # optimum as solvePnPRefineLM in about half the time (0.6-1.0 ms against 0.9-1.6 ms).
    try:
        ok, rvec, tvec = cv2.solvePnP(objects, pixels, intrinsics, None, rvec, tvec,
                                      useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    except cv2.error as exc:
        raise DegeneratePose(str(exc).strip().splitlines()[-1]) from None
    if not ok:
        raise DegeneratePose("the pose did not converge")
    rotation, _ = cv2.Rodrigues(rvec)
    translation = tvec.reshape(3)
    # In numpy, not cv2.projectPoints: the same value, in 55 us against 127 for 468 points.
    return Pose(rotation, translation,
                reprojection_rmse(rotation, translation, pixels, objects, camera))


# What a face with no pose gets; the pipeline drops such faces.
UNDEFINED_POSE = Pose(np.full((3, 3), np.nan), np.full(3, np.nan), float("nan"))


def translation_for_rotation(
    rotation: np.ndarray, image_points: np.ndarray, model_points: np.ndarray, camera: Camera
) -> np.ndarray:
    """Least-squares t for a fixed R: each point's ray through its pixel must hold R X + t.

    image_points: (K, 2) pixels; model_points: (K, 3) model_cv mm. Returns (3,) mm.
    """
    rays = (image_points - [camera.cx, camera.cy]) / [camera.fx, camera.fy]  # (K, 2) x/z, y/z
    turned = model_points @ rotation.T
    ones, zeros = np.ones(len(rays)), np.zeros(len(rays))
    system = np.concatenate([np.stack([ones, zeros, -rays[:, 0]], 1),
                             np.stack([zeros, ones, -rays[:, 1]], 1)])
    target = np.concatenate([rays[:, 0] * turned[:, 2] - turned[:, 0],
                             rays[:, 1] * turned[:, 2] - turned[:, 1]])
    return np.linalg.lstsq(system, target, rcond=None)[0]


def mean_rotation(a: np.ndarray, b: np.ndarray, weight_b: float = 0.5) -> np.ndarray:
    """The rotation nearest the weighted average of two (3, 3) rotations (chordal mean)."""
    u, _, vt = np.linalg.svd((1.0 - weight_b) * a + weight_b * b)
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def reprojection_rmse(pose_rotation: np.ndarray, translation: np.ndarray,
                      image_points: np.ndarray, model_points: np.ndarray, camera: Camera) -> float:
    projected = (model_points @ pose_rotation.T + translation) @ camera.matrix.T
    error = projected[:, :2] / projected[:, 2:] - image_points
    return float(np.sqrt(np.mean(np.sum(error**2, axis=1))))


def face_pose(landmarks_px: np.ndarray, keypoints_px: np.ndarray, presence: float,
              face: CanonicalFace, camera: Camera,
              keypoint_use: KeypointUse = KeypointUse.TURNED) -> Pose:
    """The head pose from the mesh, helped by the detector's keypoints where the mesh is weak.

    landmarks_px: (P, 2+) image pixels, the 468 vertices first (V2's irises after them are not
    used); keypoints_px: (6, 2), NaN when there are none.
    On a turned face the mesh's far-side landmarks are guesses and its yaw comes out short,
    and on a near-profile one it gives up (low presence); the detector's keypoints, ears
    included, carry the turn independently. ``keypoint_use`` says how far they are trusted.
    """
    # All 468 vertices: weighting or subsets (Procrustes weights, rigid regions) moved the
    # AFLW2000 error by tenths of a degree either way, while profiles are off by tens.
    model = face.vertices_mm
    points = landmarks_px[: len(model), :2]
    try:
        pose = solve_pose(points, model, camera)
    except DegeneratePose:
        return UNDEFINED_POSE
    # The keypoints' own fit is kept even where it is not blended in: where it disagrees with
    # the mesh's, the pose is less sure (pipeline/uncertainty.py). Six points: ~0.1 ms.
    from_keypoints = None
    if np.isfinite(keypoints_px).all():
        with contextlib.suppress(DegeneratePose):
            from_keypoints = solve_pose(keypoints_px, face.keypoints_mm, camera)
    evidence = PoseEvidence(pose.r_cam_from_model,
                            None if from_keypoints is None else from_keypoints.r_cam_from_model)
    pose = replace(pose, evidence=evidence)
    if from_keypoints is None:
        return pose
    if presence < MESH_TRUSTED_PRESENCE:
        return replace(from_keypoints, evidence=evidence)
    if keypoint_use is KeypointUse.NEVER:
        return pose
    yaw = abs(euler_pitch_yaw_roll_deg(pose.r_cam_from_model)[1])
    weight = 1.0 if keypoint_use is KeypointUse.ALWAYS else np.clip(
        (yaw - KEYPOINTS_FROM_YAW_DEG) / (KEYPOINTS_ONLY_YAW_DEG - KEYPOINTS_FROM_YAW_DEG),
        0.0, 1.0)
    if weight == 0.0:
        return pose
    rotation = mean_rotation(pose.r_cam_from_model, from_keypoints.r_cam_from_model, weight)
    return pose_with_rotation(rotation, landmarks_px, face, camera, evidence)


def pose_with_rotation(rotation: np.ndarray, landmarks_px: np.ndarray, face: CanonicalFace,
                       camera: Camera, evidence: PoseEvidence = PoseEvidence()) -> Pose:
    """The pose with this rotation whose translation best fits the landmarks."""
    model = face.vertices_mm
    points = landmarks_px[: len(model), :2]
    translation = translation_for_rotation(rotation, points, model, camera)
    return Pose(rotation, translation,
                reprojection_rmse(rotation, translation, points, model, camera), evidence)


def euler_pitch_yaw_roll_deg(r_cam_from_model: np.ndarray) -> tuple[float, float, float]:
    """Pitch, yaw, roll in degrees in the AFLW2000-3D / 300W-LP label convention.

    +yaw: the nose moves to image left; +pitch: head up; +roll: the eye line turns clockwise.
    """
    r = r_cam_from_model
    yaw = np.arcsin(np.clip(r[0, 2], -1.0, 1.0))
    pitch = np.arctan2(r[1, 2], r[2, 2])
    roll = np.arctan2(-r[0, 1], r[0, 0])
    return float(np.degrees(pitch)), float(np.degrees(yaw)), float(np.degrees(roll))


def rotation_from_euler_deg(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Inverse of ``euler_pitch_yaw_roll_deg``: R = Rx(-pitch) Ry(yaw) Rz(roll), OpenCV axes.

    Pitch enters negated because OpenCV's x axis turns a head-up nod into a negative angle.
    """
    p, y, r = np.radians([-pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rx @ ry @ rz


def quaternion_wxyz(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) with w >= 0 of a (3, 3) rotation matrix."""
    m = rotation
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    quaternion = np.array(q)
    quaternion /= np.linalg.norm(quaternion)
    return quaternion if quaternion[0] >= 0 else -quaternion


def mesh_in_camera_mm(
    landmarks_px: np.ndarray, pose: Pose, model_points: np.ndarray, camera: Camera
) -> np.ndarray:
    """The fitted face's 468 vertices in the camera frame, keeping the model's expression.

    Each vertex keeps its image position: it is back-projected to a depth given by the fitted
    canonical face's mean depth plus the mesh model's own relative depth, turned into mm at that
    distance. landmarks_px: (P, 3) x, y, z in image pixels, the 468 vertices first;
    model_points: (468, 3) model_cv. Returns: (468, 3) mm.
    """
    landmarks_px = landmarks_px[: len(model_points)]
    fitted = model_points @ pose.r_cam_from_model.T + pose.t_cam_from_model_mm
    mean_depth = fitted[:, 2].mean()
    focal = (camera.fx + camera.fy) / 2.0
    relative = landmarks_px[:, 2] - landmarks_px[:, 2].mean()
    depth = mean_depth + relative * mean_depth / focal
    x = (landmarks_px[:, 0] - camera.cx) * depth / camera.fx
    y = (landmarks_px[:, 1] - camera.cy) * depth / camera.fy
    return np.stack([x, y, depth], axis=1)
