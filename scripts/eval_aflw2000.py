"""Pose MAE, 68-point NME and detection rate on AFLW2000-3D-style data, end to end over REST.

    python scripts/eval_aflw2000.py DIR [--url http://127.0.0.1:8080]

DIR holds images/<name>.jpg and labels.npz (name, pose_para, pt3d_68), like
../shared/data/aflw2000-dev. Without --url the service runs in this process.
Modes: detect (service defaults; a missed or dropped face counts against coverage) and boxes
(the box around the 68 labelled points is given; every face kept with min_presence=0).
Besides the table: MAE per |yaw| band, and how honest pose.uncertainty_deg is (its rank
correlation with the actual error, and stated against actual MAE per fifth of faces ranked by
it).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval_data import require_labelled_set

from service.config import Quality


def tight_box(points68: np.ndarray) -> np.ndarray:
    """(2, 68) x, y -> (4,) x1, y1, x2, y2."""
    return np.concatenate([points68.min(axis=1), points68.max(axis=1)])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union)


def match_face(faces: list[dict[str, Any]], truth_box: np.ndarray) -> dict[str, Any] | None:
    """The returned face that overlaps the labelled face most (None if none overlaps)."""
    scored = [(box_iou(np.array(face["box"]), truth_box), face) for face in faces]
    scored = [item for item in scored if item[0] > 0.1]
    return max(scored, key=lambda item: item[0])[1] if scored else None


YAW_BANDS = ((0, 30), (30, 60), (60, 99))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def evaluate(client: httpx.Client, directory: Path, mode: str, quality: str | None = None
             ) -> dict[str, Any]:
    labels = np.load(directory / "labels.npz")
    keep = np.all(np.abs(np.degrees(labels["pose_para"][:, :3])) < 99, axis=1)
    errors, nmes, missed, stated, true_yaws = [], [], [], [], []
    for name, pose_para, points in zip(labels["name"][keep], labels["pose_para"][keep],
                                       labels["pt3d_68"][keep], strict=True):
        truth_box = tight_box(points[:2])
        params: dict[str, Any] = {"include": "landmarks68"}
        if quality:
            params["quality"] = quality
        if mode == "boxes":
            params |= {"boxes": json.dumps([[truth_box.round(2).tolist()]]), "min_presence": 0}
        data = (directory / "images" / f"{name}.jpg").read_bytes()
        response = client.post("/v1/faces", params=params, content=data,
                               headers={"Content-Type": "image/jpeg"})
        response.raise_for_status()
        face = match_face(response.json()["images"][0]["faces"], truth_box)
        if face is None:
            missed.append(str(name))
            continue
        euler = face["pose"]["euler_deg"]
        predicted = np.array([euler["pitch"], euler["yaw"], euler["roll"]])
        errors.append(np.abs(predicted - np.degrees(pose_para[:3])))
        stated.append(face["pose"]["uncertainty_deg"])
        true_yaws.append(abs(np.degrees(pose_para[1])))
        size = np.sqrt(np.prod(truth_box[2:] - truth_box[:2]))
        distances = np.linalg.norm(np.array(face["landmarks68"]) - points[:2].T, axis=1)
        nmes.append(distances.mean() / size)
    error = np.array(errors).reshape(-1, 3)
    per_face, said, yaw = error.mean(axis=1), np.array(stated), np.array(true_yaws)
    bands = {f"{low}-{high}": (int(inside.sum()), float(per_face[inside].mean()) if inside.any()
                               else float("nan"))
             for low, high in YAW_BANDS
             for inside in [(yaw >= low) & (yaw < high)]}
    fifths = [(float(said[part].mean()), float(per_face[part].mean()))
              for part in np.array_split(np.argsort(said), 5)] if len(said) >= 5 else []
    return {
        "mode": mode,
        "faces": int(keep.sum()),
        "covered": len(errors),
        "coverage": len(errors) / max(1, int(keep.sum())),
        "mae_pitch": float(error[:, 0].mean()),
        "mae_yaw": float(error[:, 1].mean()),
        "mae_roll": float(error[:, 2].mean()),
        "mae_mean": float(error.mean()),
        "nme_68": float(np.mean(nmes)),
        "yaw_bands": bands,
        "uncertainty_spearman": spearman(said, per_face) if len(said) > 2 else float("nan"),
        "uncertainty_fifths": fifths,
        "missed": missed,
    }


def service_client(url: str | None) -> AbstractContextManager[httpx.Client]:
    if url:
        return nullcontext(httpx.Client(base_url=url, timeout=60))
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.gateway import create_gateway

    return TestClient(create_gateway(Settings(grpc_port=0)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--url", help="a running facepose, e.g. http://127.0.0.1:8080")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--quality", choices=[q.value for q in Quality],
                        help="the preset (default: the server's)")
    args = parser.parse_args()
    require_labelled_set("eval_aflw2000", args.directory)
    with service_client(args.url) as client:
        results = [evaluate(client, args.directory, mode, args.quality)
                   for mode in ("detect", "boxes")]
    print(f"{'mode':<8}{'faces':>6}{'covered':>9}{'coverage':>10}{'yaw':>7}{'pitch':>7}"
          f"{'roll':>7}{'MAE':>7}{'NME68':>8}")
    for r in results:
        print(f"{r['mode']:<8}{r['faces']:>6}{r['covered']:>9}{r['coverage']:>9.1%}"
              f"{r['mae_yaw']:>7.2f}{r['mae_pitch']:>7.2f}{r['mae_roll']:>7.2f}"
              f"{r['mae_mean']:>7.2f}{r['nme_68']:>8.4f}")
    print(f"\n{'mode':<8}" + "".join(f"{f'|yaw| {band}':>16}" for band in results[0]["yaw_bands"])
          + "   (faces, MAE)")
    for r in results:
        print(f"{r['mode']:<8}" + "".join(f"{count:>7d} {mae:>8.2f}"
                                          for count, mae in r["yaw_bands"].values()))
    print("\npose.uncertainty_deg: stated / actual MAE per fifth of faces ranked by it")
    for r in results:
        print(f"{r['mode']:<8} Spearman {r['uncertainty_spearman']:.2f}  " + "  ".join(
            f"{said:.1f}/{got:.1f}" for said, got in r["uncertainty_fifths"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
