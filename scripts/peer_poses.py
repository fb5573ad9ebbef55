"""The peers' per-face poses on AFLW2000-3D-style data, and their pose MAE there.

    python scripts/peer_poses.py DIR

Two peers, each a script run in .bench/peer-env (mediapipe==0.10.21 pins an old NumPy):
"legacy" (scripts/peer_mediapipe.py: the face mesh + cv2.solvePnP) and "landmarker"
(scripts/peer_landmarker.py: the FaceLandmarker task, its pose from the task's facial
transformation matrix, and its 52 blendshape scores). A peer runs once over DIR/images/*.jpg;
its poses are turned into Euler angles by facepose's own convention, so that its MAE and
facepose's compare, and cached under .bench/peer-cache/ because every ablation run asks for them.
Faces are filtered and matched as scripts/eval_aflw2000.py does, so the figures line up with that
script's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import PEER_SCRIPTS, REPO, run_peer
from eval_aflw2000 import YAW_BANDS, match_face, tight_box
from eval_data import require_labelled_set

from service.pipeline.solve import euler_pitch_yaw_roll_deg

Peer = Literal["legacy", "landmarker"]
PEERS: tuple[Peer, ...] = ("legacy", "landmarker")
PEER_SCRIPT = PEER_SCRIPTS["legacy"]
CANONICAL = REPO / "service" / "data" / "canonical_face.npz"
CACHE = REPO / ".bench" / "peer-cache"
def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def landmarker_task_path() -> Path:
    """MediaPipe's face_landmarker.task (the FaceLandmarker peer's models), hash-checked."""
    from service.model_build.bundles import face_landmarker_task

    return face_landmarker_task()


def cache_key(directory: Path, images: list[Path], peer: Peer = "legacy",
              task: Path | None = None) -> str:
    """Changes with the directory, its images (names and sizes), the peer's script and its
    models: the canonical face for the legacy peer (whose key is as it always was), the task
    bundle's hash for the landmarker."""
    digest = hashlib.sha256(str(directory.resolve()).encode())
    for path in images:
        digest.update(f"\0{path.name}\0{path.stat().st_size}".encode())
    digest.update(PEER_SCRIPTS[peer].read_bytes())
    if peer == "legacy":
        digest.update(CANONICAL.read_bytes())
    else:
        assert task is not None
        digest.update(f"\0{peer}\0{sha256_file(task)}".encode())
    return digest.hexdigest()[:32]


def peer_faces(directory: Path, peer: Peer = "legacy") -> dict[str, list[dict[str, Any]]]:
    """Image name (with .jpg) -> the peer's faces: {"box": [x1, y1, x2, y2], "euler_deg": {...}},
    plus "blendshapes" ({name: score}) where the peer gives them (the landmarker).

    Runs the peer once (cached: a second call with nothing changed reads the cache).
    """
    images = sorted((directory / "images").glob("*.jpg"))
    task = landmarker_task_path() if peer == "landmarker" else None
    cached = CACHE / f"{cache_key(directory, images, peer, task)}.json"
    if cached.exists():
        return dict(json.loads(cached.read_text()))
    poses = run_peer(images, 1, peer, task)["poses"]
    faces: dict[str, list[dict[str, Any]]] = {}
    for name, found in poses.items():
        faces[name] = []
        for face in found:
            pitch, yaw, roll = euler_pitch_yaw_roll_deg(np.array(face["r_cam_from_model"]))
            faces[name].append({"box": face["box"],
                                "euler_deg": {"pitch": pitch, "yaw": yaw, "roll": roll},
                                **({"blendshapes": face["blendshapes"]}
                                   if face.get("blendshapes") else {})})
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".tmp")
    partial.write_text(json.dumps(faces))
    partial.replace(cached)
    return faces


def evaluate(directory: Path, faces: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Coverage and pose MAE (degrees, per angle, their mean and per |yaw| band) of the given
    faces against DIR/labels.npz; "errors": labelled name -> |error| (pitch, yaw, roll), so that
    two peers can be compared on the faces both find."""
    labels = np.load(directory / "labels.npz")
    keep = np.all(np.abs(np.degrees(labels["pose_para"][:, :3])) < 99, axis=1)
    errors: dict[str, np.ndarray] = {}
    true_yaws: list[float] = []
    missed = []
    for name, pose_para, points in zip(labels["name"][keep], labels["pose_para"][keep],
                                       labels["pt3d_68"][keep], strict=True):
        face = match_face(faces.get(f"{name}.jpg", []), tight_box(points[:2]))
        if face is None:
            missed.append(str(name))
            continue
        euler = face["euler_deg"]
        predicted = np.array([euler["pitch"], euler["yaw"], euler["roll"]])
        errors[str(name)] = np.abs(predicted - np.degrees(pose_para[:3]))
        true_yaws.append(abs(float(np.degrees(pose_para[1]))))
    error = np.array(list(errors.values())).reshape(-1, 3)
    yaws = np.array(true_yaws)
    bands = {}
    for low, high in YAW_BANDS:
        inside = (yaws >= low) & (yaws < high)
        bands[f"{low}-{high}"] = {"faces": int(inside.sum()),
                                  "mae": float(error[inside].mean()) if inside.any() else np.nan}
    return {"faces": int(keep.sum()), "covered": len(errors),
            "coverage": len(errors) / max(1, int(keep.sum())),
            "mae_pitch": float(error[:, 0].mean()), "mae_yaw": float(error[:, 1].mean()),
            "mae_roll": float(error[:, 2].mean()), "mae_mean": float(error.mean()),
            "mae_by_yaw": bands, "missed": missed, "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    require_labelled_set("peer_poses", args.directory)
    results = {peer: evaluate(args.directory, peer_faces(args.directory, peer))
               for peer in PEERS}
    bands = [f"{low}-{high}" for low, high in YAW_BANDS]
    print(f"{'peer':<12}{'faces':>6}{'covered':>9}{'coverage':>10}{'yaw':>7}{'pitch':>7}"
          f"{'roll':>7}{'MAE':>7}" + "".join(f"{'|yaw| ' + band:>16}" for band in bands))
    for peer, r in results.items():
        print(f"{peer:<12}{r['faces']:>6}{r['covered']:>9}{r['coverage']:>9.1%}"
              f"{r['mae_yaw']:>7.2f}{r['mae_pitch']:>7.2f}{r['mae_roll']:>7.2f}"
              f"{r['mae_mean']:>7.2f}" + "".join(
                  f"{r['mae_by_yaw'][band]['mae']:>10.2f} ({r['mae_by_yaw'][band]['faces']:>3})"
                  for band in bands))
    common = sorted(set.intersection(*(set(r["errors"]) for r in results.values())))
    print(f"\non the {len(common)} faces both peers find, MAE (mean of yaw, pitch, roll): "
          + ", ".join(f"{peer} {np.mean([r['errors'][name] for name in common]):.2f}"
                      for peer, r in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
