"""The peer's per-face poses on AFLW2000-3D-style data, and its pose MAE there.

    python scripts/peer_poses.py DIR

The peer (scripts/peer_mediapipe.py: MediaPipe's face mesh + cv2.solvePnP, in .bench/peer-env)
runs once over DIR/images/*.jpg; its poses are turned into Euler angles by facepose's own
convention, so that its MAE and facepose's compare, and cached under .bench/peer-cache/ because
every ablation run asks for them. Faces are filtered and matched as
scripts/eval_aflw2000.py does, so the figures line up with that script's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import REPO, peer_python
from eval_aflw2000 import match_face, tight_box

from service.pipeline.solve import euler_pitch_yaw_roll_deg

PEER_SCRIPT = REPO / "scripts" / "peer_mediapipe.py"
CANONICAL = REPO / "service" / "data" / "canonical_face.npz"
CACHE = REPO / ".bench" / "peer-cache"


def cache_key(directory: Path, images: list[Path]) -> str:
    """Changes with the directory, its images (names and sizes), the peer script and the model."""
    digest = hashlib.sha256(str(directory.resolve()).encode())
    for path in images:
        digest.update(f"\0{path.name}\0{path.stat().st_size}".encode())
    digest.update(PEER_SCRIPT.read_bytes())
    digest.update(CANONICAL.read_bytes())
    return digest.hexdigest()[:32]


def peer_faces(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Image name (with .jpg) -> the peer's faces: {"box": [x1, y1, x2, y2], "euler_deg": {...}}.

    Runs the peer once (cached: a second call with nothing changed reads the cache).
    """
    images = sorted((directory / "images").glob("*.jpg"))
    cached = CACHE / f"{cache_key(directory, images)}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "peer.json"
        subprocess.run([str(peer_python()), str(PEER_SCRIPT), str(CANONICAL),
                        *map(str, images), "--repeats", "1", "--out", str(out)], check=True)
        poses = json.loads(out.read_text())["poses"]
    faces = {}
    for name, found in poses.items():
        faces[name] = []
        for face in found:
            pitch, yaw, roll = euler_pitch_yaw_roll_deg(np.array(face["r_cam_from_model"]))
            faces[name].append({"box": face["box"],
                                "euler_deg": {"pitch": pitch, "yaw": yaw, "roll": roll}})
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".tmp")
    partial.write_text(json.dumps(faces))
    partial.replace(cached)
    return faces


def evaluate(directory: Path, faces: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Coverage and pose MAE (degrees) of the given faces against DIR/labels.npz."""
    labels = np.load(directory / "labels.npz")
    keep = np.all(np.abs(np.degrees(labels["pose_para"][:, :3])) < 99, axis=1)
    errors, missed = [], []
    for name, pose_para, points in zip(labels["name"][keep], labels["pose_para"][keep],
                                       labels["pt3d_68"][keep], strict=True):
        face = match_face(faces.get(f"{name}.jpg", []), tight_box(points[:2]))
        if face is None:
            missed.append(str(name))
            continue
        euler = face["euler_deg"]
        predicted = np.array([euler["pitch"], euler["yaw"], euler["roll"]])
        errors.append(np.abs(predicted - np.degrees(pose_para[:3])))
    error = np.array(errors).reshape(-1, 3)
    return {"faces": int(keep.sum()), "covered": len(errors),
            "coverage": len(errors) / max(1, int(keep.sum())),
            "mae_pitch": float(error[:, 0].mean()), "mae_yaw": float(error[:, 1].mean()),
            "mae_roll": float(error[:, 2].mean()), "mae_mean": float(error.mean()),
            "missed": missed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    r = evaluate(args.directory, peer_faces(args.directory))
    print(f"{'faces':>6}{'covered':>9}{'coverage':>10}{'yaw':>7}{'pitch':>7}{'roll':>7}"
          f"{'MAE':>7}")
    print(f"{r['faces']:>6}{r['covered']:>9}{r['coverage']:>9.1%}{r['mae_yaw']:>7.2f}"
          f"{r['mae_pitch']:>7.2f}{r['mae_roll']:>7.2f}{r['mae_mean']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
