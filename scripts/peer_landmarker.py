"""The modern peer a user would otherwise write: MediaPipe 0.10.21's FaceLandmarker task (FaceMesh
V2 + blendshapes), its pose read from the task's facial transformation matrix, single process.
Run by scripts/bench.py and scripts/peer_poses.py inside the peer environment (mediapipe pins old
NumPy), beside the legacy peer scripts/peer_mediapipe.py.

    python peer_landmarker.py IMAGE... --task face_landmarker.task --repeats N --out results.json

The JSON has the legacy peer's shape: timings (latencies_s per image, wall_s, cpu_s), faces per
image, and "poses": name -> [{box, r_cam_from_model, blendshapes: {name: score}}]. The box is
the landmarks' extent in pixels. The timed span is what a user's code pays for one photo: JPEG
decode, the RGB mp.Image and detect (which yields the matrix); recording happens outside it.

Why a conversion: MediaPipe's matrix maps its canonical model (x right, y up, z toward the
viewer; the frame service/data/canonical_face.npz is stored in) into its metric camera frame
(OpenGL-like: y up, looking down -z). facepose's r_cam_from_model maps the model in OpenCV axes
("model_cv", X' = F X) into OpenCV's camera frame (y down, z forward); both changes of axes are
F = diag(1, -1, -1), so R_cv = F R_mp F. Checked against AFLW2000-3D's labels: on
aflw2000-dev, pose MAE 3.85 degrees, where R_mp itself, its transpose or a one-sided F give 25
to 84; on aflw2000-dev-large 3.38 (scripts/peer_poses.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python.vision import (
    FaceLandmarker,
    FaceLandmarkerOptions,
    FaceLandmarkerResult,
    RunningMode,
)

# MediaPipe's canonical/camera axes -> OpenCV's, on either side of the rotation.
FLIP_YZ = np.diag([1.0, -1.0, -1.0])
MAX_FACES = 16  # as the legacy peer's max_num_faces


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def r_cam_from_model_cv(matrix: np.ndarray) -> np.ndarray:
    """The task's 4x4 facial transformation matrix -> facepose's 3x3 rotation (model_cv into
    OpenCV's camera frame). The matrix's upper-left block may carry a scale: it is taken out."""
    rotation = np.asarray(matrix, dtype=np.float64)[:3, :3]
    u, _, vt = np.linalg.svd(rotation)
    rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    return FLIP_YZ @ rotation @ FLIP_YZ


def faces_of(result: FaceLandmarkerResult, width: int, height: int) -> list[dict[str, Any]]:
    """The recorded faces of one detect call: box, rotation and blendshape scores."""
    faces = []
    for i, landmarks in enumerate(result.face_landmarks):
        points = np.array([[p.x * width, p.y * height] for p in landmarks])
        blendshapes = ({c.category_name: float(c.score) for c in result.face_blendshapes[i]}
                       if result.face_blendshapes else {})
        faces.append({
            "box": [*points.min(axis=0).tolist(), *points.max(axis=0).tolist()],
            "r_cam_from_model": r_cam_from_model_cv(
                result.facial_transformation_matrixes[i]).tolist(),
            "blendshapes": blendshapes})
    return faces


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--task", type=Path, required=True,
                        help="the face_landmarker.task bundle")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    encoded = [(path.name, path.read_bytes()) for path in args.images]
    landmarker = FaceLandmarker.create_from_options(FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(args.task)),
        running_mode=RunningMode.IMAGE, num_faces=MAX_FACES,
        output_face_blendshapes=True, output_facial_transformation_matrixes=True))
    latencies: dict[str, list[float]] = {name: [] for name, _ in encoded}
    faces: dict[str, int] = {}
    poses: dict[str, list[dict[str, Any]]] = {}
    started_cpu, started = cpu_seconds(), time.perf_counter()
    for _ in range(args.repeats):
        for name, data in encoded:
            t0 = time.perf_counter()
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            image = mp.Image(image_format=mp.ImageFormat.SRGB,
                             data=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            result = landmarker.detect(image)
            latencies[name].append(time.perf_counter() - t0)
            faces[name] = len(result.face_landmarks)
            # Recorded outside the timed span: a user's code would not pay for it.
            poses[name] = faces_of(result, bgr.shape[1], bgr.shape[0])
    wall = time.perf_counter() - started
    landmarker.close()
    args.out.write_text(json.dumps({
        "images": args.repeats * len(encoded), "wall_s": wall,
        "cpu_s": cpu_seconds() - started_cpu, "latencies_s": latencies, "faces": faces,
        "poses": poses,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
