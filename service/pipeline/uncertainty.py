"""How far to trust a face's pose: ``pose.uncertainty_deg``, the expected mean absolute error
of (pitch, yaw, roll) in degrees.

A log-linear model of what the pipeline knows of the face: how turned it is, how far apart its
separate fits came out (the mesh's, the detector keypoints', the mirror image's), its
face-presence score, how far its landmarks depart from a rigid face (reprojection error over
face size), and its size; exp(w . features + b), times the scale that makes its mean equal the
mean error on the faces it was fitted on. One model per preset (their fits differ), and one
without the keypoints' fit for faces that have none (tracked video frames).

Fitted on the large AFLW2000-3D dev set by ``scripts/fit_pose_calibration.py``, which also
checks it on each half with the model fitted on the other; the coefficients below are its
output, and the README gives the held-out figures. ``balanced`` and ``accurate`` were refitted
for FaceMesh V2 (2026-12-06, with the stretch of ``fit_uncertainty_model``); ``fast`` runs V1
as before and keeps its earlier fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.pipeline.solve import Pose, euler_pitch_yaw_roll_deg

FEATURES = ("abs_yaw", "keypoints_apart", "mirror_apart", "no_mirror", "absent",
            "log_relative_rmse", "log_size")


@dataclass(frozen=True)
class UncertaintyModel:
    weights: tuple[float, ...]  # one per FEATURES
    bias: float
    scale: float  # exp(...) times this is the expected error in degrees


UNCERTAINTY: dict[str, UncertaintyModel] = {
    "accurate": UncertaintyModel((1.214, 0.212, 0.176, 0.110, 0.667, 0.259, -0.095), 1.526, 1.113),
    "balanced": UncertaintyModel((1.695, 0.280, -0.255, -0.430, 0.799, 0.520, 0.068), 2.037,
                                 1.047),
    "fast": UncertaintyModel((1.861, 0.187, 0.000, 0.000, 0.902, 0.348, 0.203), 0.402, 1.224),
}
UNCERTAINTY_WITHOUT_KEYPOINTS: dict[str, UncertaintyModel] = {
    "accurate": UncertaintyModel((1.355, 0.000, 0.227, 0.140, 0.677, 0.361, -0.101), 2.304, 1.041),
    "balanced": UncertaintyModel((1.934, 0.000, -0.180, -0.273, 0.754, 0.636, 0.076), 2.749,
                                 1.065),
    "fast": UncertaintyModel((1.987, 0.000, 0.000, 0.000, 1.072, 0.414, 0.207), 0.953, 1.238),
}


def angle_apart_deg(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Geodesic angle between two rotations; NaN where either is missing."""
    if a is None or b is None or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    cos = (np.trace(a.T @ b) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def feature_matrix(abs_yaw_deg: np.ndarray, keypoints_apart_deg: np.ndarray,
                   mirror_apart_deg: np.ndarray, presence: np.ndarray,
                   relative_rmse: np.ndarray, size_px: np.ndarray) -> np.ndarray:
    """(N, len(FEATURES)); the angles apart NaN where that fit did not run."""
    no_mirror = ~np.isfinite(mirror_apart_deg)
    return np.column_stack([
        np.asarray(abs_yaw_deg, float) / 90.0,
        np.log1p(np.nan_to_num(keypoints_apart_deg, nan=0.0)),
        np.log1p(np.where(no_mirror, 0.0, mirror_apart_deg)),
        no_mirror.astype(float),
        1.0 - np.asarray(presence, float),
        np.log(np.clip(relative_rmse, 1e-4, 1.0)),
        np.log(np.clip(size_px, 8.0, None)),
    ])


def expected_error_deg(model: UncertaintyModel, features: np.ndarray) -> np.ndarray:
    return model.scale * np.exp(features @ np.array(model.weights) + model.bias)


def fit_uncertainty_model(features: np.ndarray, error_deg: np.ndarray,
                          ridge: float = 1e-2) -> UncertaintyModel:
    """Least squares of log error on the features (a little ridge: the features overlap),
    stretched and rescaled so that, ranked by it, each fifth of these faces is stated at its
    actual mean error.

    A fit in log space states the mean of the logs, which for the widely spread errors of the
    worst faces is well under their mean: the worst fifth came out 10% under-stated. Raising
    the prediction to a power (the stretch, one number, chosen on these faces) lifts the
    worst fifth and lowers the best without changing the ranking; the stretch is the one that
    states every fifth nearest its actual error among those that do not under-state the worst
    fifth here."""
    log_error = np.log(np.clip(error_deg, 0.1, None))
    design = np.column_stack([features, np.ones(len(features))])
    penalty = ridge * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    solution = np.linalg.solve(design.T @ design + penalty, design.T @ log_error)
    weights, bias = solution[:-1], float(solution[-1])
    log_raw = features @ weights + bias
    fifths = np.array_split(np.argsort(log_raw), 5)
    actual = np.array([error_deg[f].mean() for f in fifths])

    def misfit(stretch: float) -> tuple[bool, float]:
        stated = np.exp(stretch * log_raw)
        stated *= error_deg.mean() / stated.mean()
        by_fifth = np.array([stated[f].mean() for f in fifths])
        # Under-stating the worst fifth is the costly mistake: a client trusts a bad pose.
        return bool(by_fifth[-1] < actual[-1]), float(np.sum(np.log(by_fifth / actual) ** 2))

    stretch = min(STRETCHES, key=misfit)
    raw = np.exp(stretch * log_raw)
    return UncertaintyModel(tuple(float(stretch * w) for w in weights), stretch * bias,
                            float(error_deg.mean() / raw.mean()))


# The stretches tried: from none (1) to doubling the log-linear model's spread.
STRETCHES = tuple(np.round(np.arange(1.0, 2.01, 0.05), 2))


def box_side_px(box: np.ndarray) -> float:
    """The side of the square of the box's area: a face's size, pixels."""
    return float(np.sqrt(max(0.0, (box[2] - box[0]) * (box[3] - box[1]))))


def uncertainty_deg(pose: Pose, presence: float, side_px: float, preset: str,
                    reduction: int = 1) -> float:
    """The expected mean absolute error of this face's (pitch, yaw, roll), degrees. ``side_px``:
    its box's side, in the pixels of ``pose``'s reprojection error, an image decoded at
    1/``reduction``; ``preset``: the one that fitted it."""
    evidence = pose.evidence
    keypoints_apart = angle_apart_deg(evidence.from_mesh, evidence.from_keypoints)
    model = (UNCERTAINTY if np.isfinite(keypoints_apart)
             else UNCERTAINTY_WITHOUT_KEYPOINTS)[preset]
    features = feature_matrix(
        np.array([abs(euler_pitch_yaw_roll_deg(pose.r_cam_from_model)[1])]),
        np.array([keypoints_apart]),
        np.array([angle_apart_deg(evidence.from_mesh, evidence.from_mirror)]),
        np.array([presence]), np.array([pose.reprojection_rmse_px / max(side_px, 1.0)]),
        np.array([side_px * reduction]))
    return float(expected_error_deg(model, features)[0])
