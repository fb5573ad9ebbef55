"""The peer a user would otherwise write: MediaPipe 0.10.21's Python face mesh + cv2.solvePnP,
single process. Run by scripts/bench.py inside its own environment (mediapipe pins old NumPy).

    python peer_mediapipe.py CANONICAL_NPZ IMAGE... --repeats N --out results.json

Besides the timings, the JSON holds each image's faces as the peer finds them ("poses": name ->
[{box, r_cam_from_model}]) so that scripts/peer_poses.py can score its accuracy. The box is the
landmarks' extent in pixels; the rotation is solvePnP's, in facepose's model_cv frame (the model
is turned into OpenCV axes by diag(1, -1, -1) before the solve, as facepose does).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("canonical", type=Path)
    parser.add_argument("images", type=Path, nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = np.load(args.canonical)["vertices_mm"] * np.array([1.0, -1.0, -1.0])
    encoded = [(path.name, path.read_bytes()) for path in args.images]
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=16,
                                           refine_landmarks=False, min_detection_confidence=0.5)
    latencies: dict[str, list[float]] = {name: [] for name, _ in encoded}
    faces: dict[str, int] = {}
    poses: dict[str, list[dict[str, list[float] | list[list[float]]]]] = {}
    started_cpu, started = cpu_seconds(), time.perf_counter()
    for _ in range(args.repeats):
        for name, data in encoded:
            t0 = time.perf_counter()
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            height, width = bgr.shape[:2]
            result = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            focal = max(width, height) / (2 * np.tan(np.radians(20)))
            camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
            count = 0
            found = []
            for landmarks in result.multi_face_landmarks or []:
                points = np.array([[p.x * width, p.y * height] for p in landmarks.landmark])
                ok, rvec, _ = cv2.solvePnP(model, points[:468], camera, None,
                                           flags=cv2.SOLVEPNP_SQPNP)
                count += 1
                if ok:
                    found.append((points[:468], rvec))
            latencies[name].append(time.perf_counter() - t0)
            faces[name] = count
            # Recorded outside the timed span: a user's code would not pay for it.
            poses[name] = [{"box": [*points.min(axis=0).tolist(), *points.max(axis=0).tolist()],
                            "r_cam_from_model": cv2.Rodrigues(rvec)[0].tolist()}
                           for points, rvec in found]
    wall = time.perf_counter() - started
    images = args.repeats * len(encoded)
    args.out.write_text(json.dumps({
        "images": images, "wall_s": wall, "cpu_s": cpu_seconds() - started_cpu,
        "latencies_s": latencies, "faces": faces,
        "poses": poses,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
