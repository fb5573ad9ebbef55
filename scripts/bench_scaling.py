"""How facepose's cost grows with faces per image and with image size, over REST.

    python scripts/bench_scaling.py [--requests 30] [--out bench_scaling.json]
                                    [--plot docs/scaling.png]

One gateway (embedded runtime), one request at a time, so each figure is one image's own cost:
p50 latency and the gateway's CPU milliseconds per image. Faces: 1, 4 and 16 heads (cut from
scikit-image's astronaut) on one 1440x1080 frame. Size: one face filling the same share of a
640x480, 1920x1080 and 3840x2160 frame. Prints a table, writes the numbers as JSON and draws both
curves into a PNG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import gateway, process_tree_cpu

REPO = Path(__file__).resolve().parent.parent
FACE_COUNTS = (1, 4, 16)
SIZES = {"VGA": (640, 480), "1080p": (1920, 1080), "4K": (3840, 2160)}


def head() -> np.ndarray:
    """The astronaut's head, the face about two thirds of the tile. RGB."""
    return data.astronaut()[55:215, 145:305]


def faces_frame(count: int, width: int = 1440, height: int = 1080) -> np.ndarray:
    """``count`` heads on a grid of a grey frame (RGB), every other one mirrored.

    The grid fills the frame's height: sixteen faces are then 13% of its width each, which the
    full-range detector, seeing the whole frame at 192 pixels, still finds.
    """
    frame = np.full((height, width, 3), 90, np.uint8)
    per_row = int(np.ceil(np.sqrt(count)))
    side = height // per_row
    tile = cv2.resize(head(), (side, side), interpolation=cv2.INTER_AREA)
    for k in range(count):
        row, col = divmod(k, per_row)
        top, left = row * side, (width - per_row * side) // 2 + col * side
        frame[top:top + side, left:left + side] = tile if k % 2 == 0 else tile[:, ::-1]
    return frame


def size_frame(width: int, height: int) -> np.ndarray:
    """One head a third of the frame's height, off centre, on a grey frame (RGB)."""
    frame = np.full((height, width, 3), 90, np.uint8)
    side = height // 3
    tile = cv2.resize(head(), (side, side), interpolation=cv2.INTER_AREA)
    top, left = height // 4, width // 3
    frame[top:top + side, left:left + side] = tile
    return frame


def jpeg(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buffer.tobytes()


def measure(url: str, pid: int, image: bytes, requests: int) -> dict[str, float]:
    with httpx.Client(base_url=url, timeout=120) as client:

        def send() -> int:
            response = client.post("/v1/faces", content=image,
                                   headers={"Content-Type": "image/jpeg"})
            response.raise_for_status()
            return len(response.json()["images"][0]["faces"])

        faces = send()
        send()
        latencies = []
        cpu_before = process_tree_cpu(pid)
        for _ in range(requests):
            started = time.perf_counter()
            send()
            latencies.append(time.perf_counter() - started)
        cpu = (process_tree_cpu(pid) - cpu_before) / requests
    return {"faces_found": faces, "p50_ms": 1000 * statistics.median(latencies),
            "cpu_ms_per_image": 1000 * cpu}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Two small panels, latency and CPU against faces and against pixels, drawn with OpenCV."""
    width, height, margin = 960, 420, 60
    canvas = np.full((height, width, 3), 255, np.uint8)
    panels = [("faces per image (1440x1080)", [r for r in rows if r["curve"] == "faces"],
               lambda r: r["faces"]),
              ("image size, megapixels (one face)", [r for r in rows if r["curve"] == "size"],
               lambda r: SIZES[r["label"]][0] * SIZES[r["label"]][1] / 1e6)]
    top = max(max(r["p50_ms"], r["cpu_ms_per_image"]) for r in rows) * 1.15
    font = cv2.FONT_HERSHEY_SIMPLEX
    for p, (title, points, x_of) in enumerate(panels):
        x0, x1 = p * width // 2 + margin, (p + 1) * width // 2 - 20
        y0, y1 = height - margin, 40
        cv2.putText(canvas, title, (x0, 25), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.line(canvas, (x0, y0), (x1, y0), (0, 0, 0), 1, cv2.LINE_AA)
        cv2.line(canvas, (x0, y0), (x0, y1), (0, 0, 0), 1, cv2.LINE_AA)
        for tick in np.linspace(0, top, 5):
            y = int(y0 - (y0 - y1) * tick / top)
            cv2.putText(canvas, f"{tick:.0f}", (x0 - 45, y + 4), font, 0.4, (80, 80, 80), 1,
                        cv2.LINE_AA)
            cv2.line(canvas, (x0, y), (x1, y), (225, 225, 225), 1)
        cv2.putText(canvas, "ms", (x0 - 45, y1 - 10), font, 0.4, (80, 80, 80), 1, cv2.LINE_AA)
        # x in proportion to the value: the curves' shape is the point.
        values = [x_of(r) for r in points]
        xs = [int(x0 + 30 + (x1 - x0 - 60) * v / max(values)) for v in values]
        for metric, colour in (("p50_ms", (200, 80, 0)), ("cpu_ms_per_image", (0, 130, 0))):
            ys = [int(y0 - (y0 - y1) * r[metric] / top) for r in points]
            for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
                cv2.circle(canvas, (x, y), 4, colour, -1, cv2.LINE_AA)
                if k:
                    cv2.line(canvas, (xs[k - 1], ys[k - 1]), (x, y), colour, 2, cv2.LINE_AA)
        for x, r in zip(xs, points, strict=True):
            cv2.putText(canvas, str(r["faces"] if r["curve"] == "faces" else r["label"]),
                        (x - 12, y0 + 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, "p50 latency", (margin, height - 12), font, 0.5, (200, 80, 0), 1,
                cv2.LINE_AA)
    cv2.putText(canvas, "gateway CPU per image", (margin + 150, height - 12), font, 0.5,
                (0, 130, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "bench_scaling.json")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    cases = ([("faces", str(n), n, jpeg(faces_frame(n))) for n in FACE_COUNTS]
             + [("size", label, 1, jpeg(size_frame(*size))) for label, size in SIZES.items()])
    rows = []
    with gateway({"FACEPOSE_RUNTIME": "embedded"}) as (url, _, pid):
        for *_, image in cases:  # warm every code path before timing any
            httpx.post(f"{url}/v1/faces", content=image, headers={"Content-Type": "image/jpeg"},
                       timeout=120).raise_for_status()
        for curve, label, faces, image in cases:
            rows.append({"curve": curve, "label": label, "faces": faces,
                         **measure(url, pid, image, args.requests)})
    print(f"{'curve':<7}{'image':<8}{'faces':>6}{'found':>7}{'p50 ms':>9}{'CPU ms/img':>12}")
    for row in rows:
        print(f"{row['curve']:<7}{row['label']:<8}{row['faces']:>6}{row['faces_found']:>7}"
              f"{row['p50_ms']:>9.1f}{row['cpu_ms_per_image']:>12.1f}")
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"raw numbers: {args.out}")
    if args.plot is not None:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
