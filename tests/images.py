"""Real test images, encoded in memory."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image
from skimage import data as skimage_data

from service.model_build.fetch import default_cache_dir, fetch_package, read_member
from service.model_build.sources import Package

# A real group photo that ships in a package: insightface's t1.jpg, 1280x886, six people round a
# card table, faces of 95 to 135 px. Fetched at test time into the download cache, never stored
# in this repository.
GROUP_PHOTO_PACKAGE = Package(
    requirement="insightface==0.7.3",
    filename="insightface-0.7.3.tar.gz",
    sha256="f191f719612ebb37018f41936814500544cd0f86e6fcd676c023f354c668ddf7",
)
GROUP_PHOTO_MEMBER = "insightface-0.7.3/insightface/data/images/t1.jpg"
# Its six faces, (x1, y1, x2, y2) px, placed by hand on the overlay, left to right.
GROUP_PHOTO_FACES = np.array([
    [61, 287, 168, 393], [272, 169, 376, 273], [457, 292, 577, 411],
    [733, 344, 862, 473], [900, 76, 1028, 204], [1130, 293, 1233, 396],
], float)


def astronaut() -> np.ndarray:
    """scikit-image's astronaut: one frontal face, (512, 512, 3) uint8 RGB."""
    return skimage_data.astronaut()


def group_photo() -> bytes:
    """insightface's t1.jpg as its JPEG bytes; its faces are ``GROUP_PHOTO_FACES``."""
    return read_member(fetch_package(GROUP_PHOTO_PACKAGE, default_cache_dir()),
                       GROUP_PHOTO_MEMBER)


def encode(image: np.ndarray, extension: str = ".jpg", quality: int = 95) -> bytes:
    """Encode an RGB image with OpenCV."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if extension == ".jpg" else []
    ok, buffer = cv2.imencode(extension, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    assert ok
    return buffer.tobytes()


def jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose pixels are stored as given, with an EXIF Orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=95, exif=exif)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds one tiny data chunk."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
