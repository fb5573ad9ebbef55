"""Make the README's example overlay: a gateway renders scikit-image's astronaut.

    python scripts/render_example.py [--url http://127.0.0.1:8080] [--out docs/render-example.jpg]

Without --url it starts a local gateway (`facepose serve`) on a free port and stops it after.
The photo is cropped around the face and enlarged first, so the small committed image shows
the mesh, axes and angles at a readable size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import httpx
from skimage import data

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench import gateway  # noqa: E402


def example_photo() -> bytes:
    """The astronaut's head and shoulders (300 x 300 of the 512 x 512), enlarged to 600."""
    crop = data.astronaut()[0:300, 80:380]
    enlarged = cv2.resize(crop, (600, 600), interpolation=cv2.INTER_CUBIC)
    ok, png = cv2.imencode(".png", cv2.cvtColor(enlarged, cv2.COLOR_RGB2BGR))
    assert ok
    return png.tobytes()


def render(url: str, out: Path) -> None:
    response = httpx.post(f"{url}/v1/render", content=example_photo(), timeout=60,
                          headers={"Content-Type": "image/png", "Accept": "image/jpeg"})
    response.raise_for_status()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(response.content)
    print(f"{out}: {len(response.content)} bytes, {response.headers['x-face-count']} face(s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running gateway; default: start one")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "render-example.jpg")
    args = parser.parse_args()
    if args.url:
        render(args.url, args.out)
    else:
        with gateway({}) as (url, _, _):
            render(url, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
