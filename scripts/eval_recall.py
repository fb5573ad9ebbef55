"""Recall by face size: labelled AFLW2000-3D faces, and a real group photo, pasted at known
sizes and places into canvases, sent to the service, and matched.

    python scripts/eval_recall.py [DIR] [--quality Q] [--url URL] [--tables everyday large]

Two sets of canvases: everyday images (640x480 to 1280x720: webcam frames, web photos, video
frames), each face size pasted into enough canvases for EVERYDAY_FACES faces a size, then the
group photo scaled to 640 px wide and canvases with no face; and large photos (1920x1080 to
8000x600), as below.

DIR is like ../shared/data/aflw2000-dev-large (images/, labels.npz). Each canvas is a mosaic of
the set's photos as thumbnails (a background with texture, and no face large enough to be
searched for), with faces pasted on a grid, one size per canvas, at seeded random offsets.
A face's size is the longer side of the box around its 68 labelled points. The second table
does the same with copies of a group photo that ships in a package (insightface's t1.jpg, six
faces placed by hand; tests/images.py), shrunk or enlarged so that its smallest face is the
size, as many copies as fit up to the same number of faces; then the photo itself. Recall: a pasted
face matched by a returned box (IoU over 0.3 with the pasted face's box); false faces: returned
boxes matching none. Prints recall per face size and canvas, false faces, and ms per image and
per megapixel. Nothing derived from the images is written anywhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval_aflw2000 import service_client, tight_box
from eval_data import DEV_LARGE, require_labelled_set

from service.pipeline.detect import box_iou
from tests.images import GROUP_PHOTO_FACES, group_photo

CANVASES = ((1920, 1080), (3000, 2000), (4032, 3024), (6000, 1000), (8000, 600))
SIZES = (48, 64, 96, 128, 192)
EVERYDAY_CANVASES = ((640, 480), (800, 600), (1024, 768), (1280, 720))
EVERYDAY_SIZES = (40, 48, 64, 96)
EVERYDAY_FACES = 64  # per face size, over the everyday canvases
GROUP_WIDTH_PX = 640  # the group photo as a phone or a web page shows it
EMPTY_CANVASES = 5  # of each everyday size and 1920x1080: only false faces can come back
MATCH_IOU = 0.3
FACES_PER_CANVAS = 24


@dataclass(frozen=True)
class Canvas:
    name: str
    jpeg: bytes
    boxes: np.ndarray  # (N, 4) pasted faces, x1, y1, x2, y2


def labelled_heads(directory: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(head crop RGB, face box in the crop) of the first ``count`` near-frontal faces: a crop
    twice the face's size, so that hair and neck come along."""
    labels = np.load(directory / "labels.npz")
    heads = []
    for name, pose, points in zip(labels["name"], labels["pose_para"], labels["pt3d_68"],
                                  strict=True):
        if np.abs(np.degrees(pose[:3])).max() > 45:
            continue
        image = cv2.cvtColor(cv2.imread(str(directory / "images" / f"{name}.jpg")),
                             cv2.COLOR_BGR2RGB)
        box = tight_box(points[:2])
        centre, side = (box[:2] + box[2:]) / 2, float(np.max(box[2:] - box[:2]))
        low = np.maximum(np.round(centre - side).astype(int), 0)
        high = np.minimum(np.round(centre + side).astype(int), image.shape[1::-1])
        heads.append((image[low[1]:high[1], low[0]:high[0]], box - np.tile(low, 2)))
        if len(heads) == count:
            break
    return heads


THUMBNAIL_PX = 24


def thumbnails(directory: Path) -> np.ndarray:
    """The set's photos as 24 px thumbnails, (N, 24, 24, 3) RGB: a background's texture, with
    faces of about 10 px, too small to be searched for. (Blurred 300 px tiles, and 48 px
    thumbnails, still held faces the detector rightly found, and that were counted as
    false.)"""
    return np.stack([cv2.cvtColor(cv2.resize(cv2.imread(str(path)), (THUMBNAIL_PX,) * 2,
                                             interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
                     for path in sorted((directory / "images").glob("*.jpg"))])


def background(tiles: np.ndarray, width: int, height: int, rng: np.random.Generator
               ) -> np.ndarray:
    """A mosaic of randomly chosen thumbnails, softened a little."""
    rows, columns = -(-height // THUMBNAIL_PX), -(-width // THUMBNAIL_PX)
    chosen = tiles[rng.integers(len(tiles), size=rows * columns)]
    mosaic = chosen.reshape(rows, columns, THUMBNAIL_PX, THUMBNAIL_PX, 3).swapaxes(1, 2)
    canvas = mosaic.reshape(rows * THUMBNAIL_PX, columns * THUMBNAIL_PX, 3)[:height, :width]
    return cv2.GaussianBlur(np.ascontiguousarray(canvas), (0, 0), 1.0)


def make_canvas(tiles: np.ndarray, heads: list[tuple[np.ndarray, np.ndarray]], width: int,
                height: int, size: int, rng: np.random.Generator) -> Canvas:
    """Faces of ``size`` px in cells of a grid three faces wide, each at a random place in
    its cell."""
    canvas = background(tiles, width, height, rng)
    cell = 3 * size
    cells = [(x0, y0) for y0 in range(0, height - cell + 1, cell)
             for x0 in range(0, width - cell + 1, cell)]
    # At most FACES_PER_CANVAS, below the service's max_faces, so that recall is not capped.
    chosen = rng.choice(len(cells), min(len(cells), FACES_PER_CANVAS), replace=False)
    boxes = []
    for x0, y0 in (cells[i] for i in sorted(chosen)):
        head, face = heads[int(rng.integers(len(heads)))]
        scale = size / float(np.max(face[2:] - face[:2]))
        resized = cv2.resize(head, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = resized.shape[:2]
        if h > cell or w > cell:
            continue
        x, y = x0 + int(rng.integers(cell - w + 1)), y0 + int(rng.integers(cell - h + 1))
        canvas[y:y + h, x:x + w] = resized
        boxes.append(face * scale + [x, y, x, y])
    return Canvas(f"{width}x{height}", encode_jpeg(canvas), np.array(boxes).reshape(-1, 4))


def make_group_canvas(tiles: np.ndarray, photo: np.ndarray, width: int, height: int, size: int,
                      rng: np.random.Generator) -> Canvas | None:
    """Copies of the group photo scaled so that its smallest face is ``size`` px, on a grid of
    cells a little larger than the copy; None where not one copy fits."""
    sides = GROUP_PHOTO_FACES[:, 2:] - GROUP_PHOTO_FACES[:, :2]
    scale = size / float(np.min(np.max(sides, axis=1)))
    resized = cv2.resize(photo, None, fx=scale, fy=scale,
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    h, w = resized.shape[:2]
    cell_w, cell_h = w * 9 // 8, h * 9 // 8
    cells = [(x0, y0) for y0 in range(0, height - cell_h + 1, cell_h)
             for x0 in range(0, width - cell_w + 1, cell_w)]
    if not cells:
        return None
    copies = min(len(cells), FACES_PER_CANVAS // len(GROUP_PHOTO_FACES))
    canvas = background(tiles, width, height, rng)
    boxes = []
    for x0, y0 in (cells[i] for i in sorted(rng.choice(len(cells), copies, replace=False))):
        x, y = x0 + int(rng.integers(cell_w - w + 1)), y0 + int(rng.integers(cell_h - h + 1))
        canvas[y:y + h, x:x + w] = resized
        boxes.append(GROUP_PHOTO_FACES * scale + [x, y, x, y])
    return Canvas(f"{width}x{height}", encode_jpeg(canvas), np.concatenate(boxes))


def encode_jpeg(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def score(found: list[dict[str, Any]], truth: np.ndarray) -> tuple[int, int]:
    """(pasted faces matched, returned faces matching none)."""
    boxes = np.array([face["box"] for face in found]).reshape(-1, 4)
    matched = sum(1 for box in truth if len(boxes) and box_iou(box, boxes).max() > MATCH_IOU)
    false = sum(1 for box in boxes if not len(truth) or box_iou(box, truth).max() <= MATCH_IOU)
    return matched, false


def everyday_table(faces_in: Any, heads_canvas: Any, tiles: np.ndarray, group: np.ndarray,
                   rng: np.random.Generator) -> None:
    """Recall per face size over the everyday canvases, the group photo at 640 px wide, and
    the false faces of canvases with no face."""
    print("\neveryday images: AFLW2000-3D faces, recall per canvas (faces found/pasted)")
    print(f"{'canvas':<11}" + "".join(f"{size:>8}px" for size in EVERYDAY_SIZES)
          + f"{'false':>7}{'ms/image':>10}")
    per_canvas = -(-EVERYDAY_FACES // len(EVERYDAY_CANVASES))
    totals = {size: [0, 0] for size in EVERYDAY_SIZES}
    for width, height in EVERYDAY_CANVASES:
        cells, false_faces, seconds, sent = [], 0, 0.0, 0
        for size in EVERYDAY_SIZES:
            matched_here = pasted_here = 0
            while pasted_here < per_canvas:
                canvas = heads_canvas(width, height, size)
                if canvas is None or not len(canvas.boxes):
                    break
                faces, took = faces_in(canvas.jpeg)
                seconds, sent = seconds + took, sent + 1
                matched, false = score(faces, canvas.boxes)
                matched_here, pasted_here = matched_here + matched, pasted_here + len(canvas.boxes)
                false_faces += false
            totals[size][0] += matched_here
            totals[size][1] += pasted_here
            cells.append(f"{matched_here:>4}/{pasted_here:<5}")
        ms = seconds / max(1, sent) * 1000
        print(f"{f'{width}x{height}':<11}" + "".join(cells) + f"{false_faces:>7}{ms:>10.0f}")
    print(f"{'recall':<11}" + "".join(f"{m / max(1, n):>10.0%}" for m, n in totals.values()))
    scale = GROUP_WIDTH_PX / group.shape[1]
    small = cv2.resize(group, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    faces, took = faces_in(encode_jpeg(small))
    matched, false = score(faces, GROUP_PHOTO_FACES * scale)
    smallest = float(np.min(np.max(GROUP_PHOTO_FACES[:, 2:] - GROUP_PHOTO_FACES[:, :2],
                                   axis=1))) * scale
    print(f"group photo at {small.shape[1]}x{small.shape[0]} (smallest face {smallest:.0f} px): "
          f"{matched}/{len(GROUP_PHOTO_FACES)} faces, {false} false, {took * 1000:.0f} ms")
    # With no face, the time is the search's own: decode, detectors, tiles.
    false_faces, sent, costs = 0, 0, []
    for width, height in (*EVERYDAY_CANVASES, (1920, 1080)):
        took = []
        for _ in range(EMPTY_CANVASES):
            faces, seconds = faces_in(encode_jpeg(background(tiles, width, height, rng)))
            false_faces, sent = false_faces + len(faces), sent + 1
            took.append(seconds)
        ms = 1000 * float(np.median(took))
        costs.append(f"{width}x{height} {ms:.0f} ms ({ms / (width * height / 1e6):.0f}/MP)")
    print(f"canvases with no face: {false_faces} false faces in {sent}; median time: "
          + ", ".join(costs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, nargs="?", default=DEV_LARGE)
    parser.add_argument("--url", help="a running facepose, e.g. http://127.0.0.1:8080")
    parser.add_argument("--quality", choices=["fast", "balanced", "accurate"])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES),
                        help="the large canvases' face sizes")
    parser.add_argument("--tables", nargs="+", choices=["everyday", "large"],
                        default=["everyday", "large"])
    parser.add_argument("--min-face-px", type=int, help="sent as min_face_px")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    require_labelled_set("eval_recall", args.directory)
    rng = np.random.default_rng(args.seed)
    heads = labelled_heads(args.directory, 200)
    tiles = thumbnails(args.directory)
    params: dict[str, Any] = {"max_faces": 32, **({"quality": args.quality}
                                                  if args.quality else {}),
                              **({"min_face_px": args.min_face_px} if args.min_face_px else {})}
    client_context: AbstractContextManager[httpx.Client] = service_client(args.url)
    group_jpeg = group_photo()
    group = cv2.cvtColor(cv2.imdecode(np.frombuffer(group_jpeg, np.uint8), cv2.IMREAD_COLOR),
                         cv2.COLOR_BGR2RGB)

    def heads_canvas(width: int, height: int, size: int) -> Canvas | None:
        return make_canvas(tiles, heads, width, height, size, rng)

    def group_canvas(width: int, height: int, size: int) -> Canvas | None:
        return make_group_canvas(tiles, group, width, height, size, rng)

    with client_context as client:
        def faces_in(jpeg: bytes) -> tuple[list[dict[str, Any]], float]:
            started = time.perf_counter()
            response = client.post("/v1/faces", params=params, content=jpeg,
                                   headers={"Content-Type": "image/jpeg"})
            seconds = time.perf_counter() - started
            response.raise_for_status()
            return response.json()["images"][0]["faces"], seconds

        if "everyday" in args.tables:
            everyday_table(faces_in, heads_canvas, tiles, group, rng)
        if "large" not in args.tables:
            return 0
        for title, make in (("AFLW2000-3D faces", heads_canvas),
                            ("group photo (insightface t1.jpg)", group_canvas)):
            print(f"\n{title}")
            print(f"{'canvas':<11}" + "".join(f"{size:>8}px" for size in args.sizes)
                  + f"{'false':>7}{'ms/image':>10}{'ms/MP':>7}")
            totals = {size: [0, 0] for size in args.sizes}
            for width, height in CANVASES:
                cells, false_faces, seconds, sent = [], 0, 0.0, 0
                for size in args.sizes:
                    canvas = make(width, height, size)
                    if canvas is None:
                        cells.append(f"{'-':>4} {'':<5}")
                        continue
                    faces, took = faces_in(canvas.jpeg)
                    seconds, sent = seconds + took, sent + 1
                    matched, false = score(faces, canvas.boxes)
                    false_faces += false
                    totals[size][0] += matched
                    totals[size][1] += len(canvas.boxes)
                    cells.append(f"{matched:>4}/{len(canvas.boxes):<5}")
                ms = seconds / max(1, sent) * 1000
                print(f"{f'{width}x{height}':<11}" + "".join(cells)
                      + f"{false_faces:>7}{ms:>10.0f}{ms / (width * height / 1e6):>7.1f}")
            print(f"{'recall':<11}" + "".join(f"{m / max(1, n):>10.0%}"
                                              for m, n in totals.values()))
        faces, took = faces_in(group_jpeg)
        matched, false = score(faces, GROUP_PHOTO_FACES)
        height, width = group.shape[:2]
        print(f"\nthe group photo itself, {width}x{height}: {matched}/{len(GROUP_PHOTO_FACES)} "
              f"faces, {false} false, {took * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
