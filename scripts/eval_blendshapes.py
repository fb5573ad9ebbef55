"""facepose's blendshapes against the FaceLandmarker's own, on the same photos.

    python scripts/eval_blendshapes.py [DIR] [--limit N] [--quality balanced]

Runs DIR/images/*.jpg (default: the large AFLW2000-3D dev set) through facepose in this
process with include=blendshapes, and the FaceLandmarker peer (scripts/peer_poses.py, cached);
on the faces both find (matched by box overlap) it prints the mean absolute difference of the
52 scores and, per coefficient that varies (the peer's standard deviation over these faces at
least 0.05), the Pearson correlation; then the mean correlation and the weakest ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval_aflw2000 import box_iou
from eval_data import DEV_LARGE, require_labelled_set
from peer_poses import peer_faces

from service.clients.local import FacePose
from service.wire import BLENDSHAPE_NAMES

# A coefficient varies where the peer's scores spread this much over the faces compared.
VARIES_STD = 0.05
SAME_FACE_IOU = 0.5


def paired_scores(directory: Path, limit: int | None, quality: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(F, 52) facepose's and the peer's scores on the F faces both find."""
    peer = peer_faces(directory, peer="landmarker")
    paths = sorted((directory / "images").glob("*.jpg"))[:limit]
    ours, theirs = [], []
    with FacePose() as facepose:
        for path in paths:
            (entry,) = facepose.estimate([path], include=["blendshapes"],
                                         quality=quality)["images"]
            for face in entry["faces"]:
                if "blendshapes" not in face:
                    continue
                candidates = [p for p in peer.get(path.name, []) if "blendshapes" in p]
                overlaps = [box_iou(np.array(face["box"]), np.array(p["box"]))
                            for p in candidates]
                if not overlaps or max(overlaps) < SAME_FACE_IOU:
                    continue
                match = candidates[int(np.argmax(overlaps))]
                ours.append([face["blendshapes"][n] for n in BLENDSHAPE_NAMES])
                theirs.append([match["blendshapes"][n] for n in BLENDSHAPE_NAMES])
    return np.array(ours).reshape(-1, 52), np.array(theirs).reshape(-1, 52)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, nargs="?", default=DEV_LARGE)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--quality", default="balanced")
    args = parser.parse_args()
    require_labelled_set("eval_blendshapes", args.directory)
    ours, theirs = paired_scores(args.directory, args.limit, args.quality)
    print(f"{len(ours)} faces with scores from both")
    print(f"mean |facepose - FaceLandmarker| over all 52 scores: "
          f"{np.abs(ours - theirs).mean():.4f}")
    varying = np.flatnonzero(theirs.std(axis=0) >= VARIES_STD)
    correlations = {BLENDSHAPE_NAMES[k]: float(np.corrcoef(ours[:, k], theirs[:, k])[0, 1])
                    for k in varying}
    print(f"{len(varying)} coefficients vary (peer std >= {VARIES_STD}): mean correlation "
          f"{np.mean(list(correlations.values())):.3f}, lowest "
          + ", ".join(f"{name} {value:.3f}" for name, value in
                      sorted(correlations.items(), key=lambda item: item[1])[:5]))
    print(f"mean |difference| on them: {np.abs(ours[:, varying] - theirs[:, varying]).mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
