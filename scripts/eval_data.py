"""Where the evaluation and benchmark scripts find their labelled photos, and what they say when
the photos are not there (the data set is never in the repository)."""

from __future__ import annotations

import sys
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEV_LARGE = SHARED_DATA / "aflw2000-dev-large"  # 1,000 labelled photos: decisions
DEV_SMALL = SHARED_DATA / "aflw2000-dev"  # 100 of them: quick checks

WHAT_IT_IS = (
    "a labelled AFLW2000-3D set: images/<name>.jpg and labels.npz (name, pose_para, pt3d_68, "
    "roi; ../shared/data/aflw2000-dev/README.md describes them). AFLW2000-3D is a research "
    "data set, published with 3DDFA (Zhu et al., \"Face Alignment Across Large Poses: A 3D "
    "Solution\", CVPR 2016); this project's development machines hold two subsets under "
    f"{SHARED_DATA} (aflw2000-dev, 100 photos; aflw2000-dev-large, 1,000). It is never "
    "committed: get it there, or pass the directory of your copy")


def missing_data_message(script: str, directory: Path, labels: bool = True) -> str | None:
    """Why ``directory`` is not a labelled set, for a person; None where it is one (with
    ``labels`` False, where it has the images)."""
    if (directory / "images").is_dir() and (not labels or (directory / "labels.npz").is_file()):
        return None
    found = "does not exist" if not directory.exists() else "has no images/ and labels.npz"
    return f"{script}: {directory} {found}. It needs {WHAT_IT_IS}."


def require_labelled_set(script: str, directory: Path) -> Path:
    """``directory`` if it holds a labelled set; else the message, and exit status 2."""
    message = missing_data_message(script, directory)
    if message is not None:
        print(message, file=sys.stderr)
        raise SystemExit(2)
    return directory
