"""What each pipeline step buys and costs: the large AFLW2000-3D dev set through the pipeline
in this process with each optional step switched off in turn, beside the peer.

    python scripts/ablate.py [DIR] [--limit N] [--boxes] [--json OUT]   (make ablate)

Per configuration: coverage of the labelled faces, pose MAE on every face found, MAE on the
faces the peer (the FaceLandmarker, scripts/peer_landmarker.py, its pose from its facial
transformation matrix) also finds beside the peer's own MAE on those same faces, the same per
|yaw| band (0-30, 30-60, 60-99 degrees: ours/peer's), 68-point NME, CPU ms per image (decode
to poses, one image at a time, this process's CPU time: every thread the runtime uses counts),
model calls and face-mesh crops per image, and
"others": faces returned besides the labelled one (each photo has one labelled face; most
others are false).
With --boxes, also the boxes-mode MAE (the labelled face given, every face kept).
The peer's poses are computed once and cached (scripts/peer_poses.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval_aflw2000 import match_face, tight_box
from eval_data import DEV_LARGE, require_labelled_set
from peer_poses import peer_faces

from service.app.images import EncodedImages, decode_request_images
from service.app.options import options_model
from service.config import Settings
from service.pipeline import stages
from service.pipeline.estimate import estimate_faces
from service.pipeline.mesh import MESH_V1, MESH_V2
from service.pipeline.presets import ACCURATE, BALANCED, FAST
from service.pipeline.records import FullRange, MirrorFrom, Preset
from service.pipeline.solve import euler_pitch_yaw_roll_deg, load_canonical_face
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime

MESHES = (MESH_V1, MESH_V2)


def configurations() -> list[tuple[str, Preset]]:
    """Today's full pipeline, each optional step off in turn, the cheaper variants of two
    steps, and the presets."""
    with_refit = (stages.locate, stages.sharpen, stages.fit, stages.refit, stages.search_lost,
                  stages.solve, stages.mirror)
    return [
        ("accurate (the most steps)", ACCURATE),
        ("- full-range detector", replace(ACCURATE, full_range=FullRange.NEVER)),
        ("  full-range only where no large face",
         replace(ACCURATE, full_range=FullRange.WHERE_NO_LARGE_FACE)),
        ("- finer re-decode", ACCURATE.without(stages.sharpen)),
        ("+ second mesh pass", replace(ACCURATE, stages=with_refit)),
        ("- lost-face search", ACCURATE.without(stages.search_lost)),
        ("- keypoint blend (on V1's refinds)", replace(ACCURATE, keypoint_blend=False)),
        ("- mirrored fit", ACCURATE.without(stages.mirror)),
        ("  mirrored fit from the first crop",
         replace(ACCURATE, mirror_from=MirrorFrom.FIRST_CROP)),
        ("  mirrored fit from the landmarks", replace(ACCURATE, mirror_from=MirrorFrom.LANDMARKS)),
        ("balanced (the default)", BALANCED),
        ("  with V1 as before (blend, V1 search)", replace(
            BALANCED, mesh_model=MESH_V1, search_model=None, keypoint_blend=True,
            stages=BALANCED.without(stages.mirror).stages)),
        ("  - keypoint blend (on V1's refinds)", replace(BALANCED, keypoint_blend=False)),
        ("  lost-face search with V2", replace(BALANCED, search_model=None)),
        ("  - lost-face search", BALANCED.without(stages.search_lost)),
        ("  - mirrored fit", BALANCED.without(stages.mirror)),
        ("  mirrored fit from 35 degrees", replace(BALANCED, mirror_above_yaw_deg=35.0)),
        ("  + second mesh pass", replace(BALANCED, stages=with_refit)),
        ("fast", FAST),
    ]


class CountingRuntime:
    """A runtime that counts the calls and batch items each model gets."""

    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime, self.specs = runtime, runtime.specs
        self.calls: Counter[str] = Counter()
        self.items: Counter[str] = Counter()

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls[model] += 1
        self.items[model] += len(next(iter(inputs.values())))
        return self.runtime.infer(model, inputs)

    def is_ready(self) -> bool:
        return True

    def close(self) -> None:
        self.runtime.close()


@dataclass(frozen=True)
class Labelled:
    name: str
    data: bytes
    truth_box: np.ndarray  # (4,)
    euler_deg: np.ndarray  # (3,) pitch, yaw, roll
    points68: np.ndarray  # (68, 2)


def labelled_faces(directory: Path, limit: int | None) -> list[Labelled]:
    labels = np.load(directory / "labels.npz")
    keep = np.all(np.abs(np.degrees(labels["pose_para"][:, :3])) < 99, axis=1)
    faces = [Labelled(str(name), (directory / "images" / f"{name}.jpg").read_bytes(),
                      tight_box(points[:2]), np.degrees(pose[:3]), points[:2].T)
             for name, pose, points in zip(labels["name"][keep], labels["pose_para"][keep],
                                           labels["pt3d_68"][keep], strict=True)]
    return faces[:limit]


def run(runtime: CountingRuntime, settings: Settings, faces: list[Labelled], preset: Preset,
        boxes: bool) -> tuple[dict[str, dict[str, Any]], float, Counter[str], Counter[str], int]:
    """Per image name, the matched face's Euler angles and NME (absent when missed); CPU
    seconds; model calls and items; faces returned besides the labelled ones."""
    options = options_model(settings)(include=["landmarks68"])
    landmarks68 = load_canonical_face().landmarks68
    runtime.calls.clear()
    runtime.items.clear()
    found: dict[str, dict[str, Any]] = {}
    cpu, returned = 0.0, 0
    for face in faces:
        given = face.truth_box[None] if boxes else None
        image_options = options.model_copy(update={"min_presence": 0.0}) if boxes else options
        started = time.process_time()
        (decoded,) = decode_request_images(
            settings, EncodedImages([face.data], None if given is None else [given],
                                    whole=True), image_options)
        assert decoded.request is not None, decoded.error
        (result,) = estimate_faces(runtime, [decoded.request], preset)
        cpu += time.process_time() - started
        returned += len(result.faces)
        match = match_face([{"box": f.box.tolist(), "face": f} for f in result.faces],
                           face.truth_box)
        if match is None:
            continue
        fitted = match["face"]
        size = np.sqrt(np.prod(face.truth_box[2:] - face.truth_box[:2]))
        distances = np.linalg.norm(fitted.landmarks_px[landmarks68, :2] - face.points68, axis=1)
        found[face.name] = {"euler": np.array(euler_pitch_yaw_roll_deg(
            fitted.pose.r_cam_from_model)), "nme": float(distances.mean() / size)}
    return found, cpu, Counter(runtime.calls), Counter(runtime.items), returned - len(found)


def peer_eulers(faces: list[Labelled], found: dict[str, list[dict[str, Any]]]
                ) -> dict[str, np.ndarray]:
    """Per labelled face a peer found, its (pitch, yaw, roll) degrees."""
    eulers = {}
    for face in faces:
        match = match_face(found.get(f"{face.name}.jpg", []), face.truth_box)
        if match is not None:
            euler = match["euler_deg"]
            eulers[face.name] = np.array([euler["pitch"], euler["yaw"], euler["roll"]])
    return eulers


def mae(faces: list[Labelled], euler: dict[str, np.ndarray]) -> float:
    errors = [np.abs(euler[f.name] - f.euler_deg) for f in faces if f.name in euler]
    return float(np.mean(errors)) if errors else float("nan")


YAW_BANDS = ((0, 30), (30, 60), (60, 99))


def band_maes(faces: list[Labelled], euler: dict[str, np.ndarray]) -> list[float]:
    """MAE per |yaw| band (the label's yaw)."""
    return [mae([f for f in faces if low <= abs(f.euler_deg[1]) < high], euler)
            for low, high in YAW_BANDS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, nargs="?", default=DEV_LARGE)
    parser.add_argument("--limit", type=int, help="only the first N labelled faces")
    parser.add_argument("--boxes", action="store_true", help="also the boxes-mode MAE")
    parser.add_argument("--only", help="only the configurations whose label contains one of "
                                           "these comma-separated words")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    require_labelled_set("ablate", args.directory)

    faces = labelled_faces(args.directory, args.limit)
    peer = peer_eulers(faces, peer_faces(args.directory, peer="landmarker"))
    legacy = peer_eulers(faces, peer_faces(args.directory))

    settings = Settings()
    runtime = CountingRuntime(create_runtime(settings))
    run(runtime, settings, faces[:5], ACCURATE, boxes=False)  # warm-up
    legacy_found = len(legacy)
    print(f"{len(faces)} labelled faces in {args.directory}; the peer (FaceLandmarker) finds "
          f"{len(peer)} ({len(peer) / len(faces):.1%}), MAE {mae(faces, peer):.2f} on them; "
          f"the legacy face mesh {legacy_found} ({legacy_found / len(faces):.1%})\n")
    header = (f"{'configuration':<38}{'coverage':>9}{'MAE':>6}{'MAE common':>11}{'peer':>6}"
              f"{'NME68':>8}{'CPU ms':>8}{'calls':>7}{'crops':>7}{'others':>7}"
              + (f"{'boxes MAE':>10}" if args.boxes else "")
              + "  bands common: ours/peer   legacy common: ours/legacy")
    print(header)
    rows = []
    for label, preset in configurations():
        if args.only and not any(word in label for word in args.only.split(",")):
            continue
        found, cpu, calls, items, others = run(runtime, settings, faces, preset, boxes=False)
        euler = {name: f["euler"] for name, f in found.items()}
        common = [f for f in faces if f.name in euler and f.name in peer]
        row = {
            "configuration": label.strip(),
            "coverage": len(found) / len(faces), "mae": mae(faces, euler),
            "mae_common": mae(common, euler), "peer_mae_common": mae(common, peer),
            "common_faces": len(common),
            "nme68": float(np.mean([f["nme"] for f in found.values()])),
            "cpu_ms_per_image": cpu / len(faces) * 1000,
            "calls_per_image": sum(calls.values()) / len(faces),
            "mesh_crops_per_image": sum(items[m] for m in MESHES) / len(faces),
            "other_faces": others,
            "bands_common": band_maes(common, euler), "peer_bands_common": band_maes(common, peer),
        }
        with_legacy = [f for f in faces if f.name in euler and f.name in legacy]
        row["legacy_mae_common"] = mae(with_legacy, euler)
        row["legacy_peer_mae_common"] = mae(with_legacy, legacy)
        if args.boxes:
            boxed, *_ = run(runtime, settings, faces, preset, boxes=True)
            row["boxes_mae"] = mae(faces, {name: f["euler"] for name, f in boxed.items()})
        rows.append(row)
        print(f"{label:<38}{row['coverage']:>9.1%}{row['mae']:>6.2f}{row['mae_common']:>11.2f}"
              f"{row['peer_mae_common']:>6.2f}{row['nme68']:>8.4f}{row['cpu_ms_per_image']:>8.1f}"
              f"{row['calls_per_image']:>7.2f}{row['mesh_crops_per_image']:>7.2f}"
              f"{row['other_faces']:>7}"
              + (f"{row['boxes_mae']:>10.2f}" if args.boxes else "")
              + "  " + " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(
                  row["bands_common"], row["peer_bands_common"], strict=True))
              + f"   {row['legacy_mae_common']:.2f}/{row['legacy_peer_mae_common']:.2f}",
              flush=True)
    print("\nMAE common: on the faces both this configuration and the peer find; peer: the "
          "peer's MAE on those same faces.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
