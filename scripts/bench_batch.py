"""Throughput of `facepose batch` against a local gateway (embedded runtime).

    python scripts/bench_batch.py [--images 200] [--concurrency 1 4 16] [--repeats 3]

Generates the images (scikit-image's astronaut, turned: one face each, 512 px), starts a
gateway on free loopback ports, runs the batch command per concurrency, and prints a table of
images/s (median of --repeats runs).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
from bench import REPO, gateway
from skimage import data


def make_images(folder: Path, count: int) -> None:
    base = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    for i in range(count):
        turn = cv2.getRotationMatrix2D((256, 256), (i * 7) % 40 - 20, 1.0)
        cv2.imwrite(str(folder / f"face{i:05d}.jpg"), cv2.warpAffine(base, turn, (512, 512)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with gateway({}) as (_, target, _), tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch, "images")
        folder.mkdir()
        make_images(folder, args.images)
        print(f"{'concurrency':>12}{'images':>8}{'images/s (median)':>20}{'runs':>24}")
        for concurrency in args.concurrency:
            rates = []
            for repeat in range(args.repeats):
                out = Path(scratch, f"out-{concurrency}-{repeat}.jsonl")
                result = subprocess.run(
                    [sys.executable, "-m", "service.cli", "batch", str(folder), "--server",
                     target, "--out", str(out), "--concurrency", str(concurrency)],
                    cwd=REPO, capture_output=True, text=True, check=True)
                match = re.search(r"([\d.]+) images/s", result.stdout)
                assert match, result.stdout
                rates.append(float(match[1]))
            runs = ", ".join(f"{r:.1f}" for r in rates)
            print(f"{concurrency:>12}{args.images:>8}{statistics.median(rates):>20.1f}"
                  f"{runs:>24}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
