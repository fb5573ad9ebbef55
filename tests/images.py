"""Real test images, encoded in memory."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image
from skimage import data as skimage_data


def astronaut() -> np.ndarray:
    """scikit-image's astronaut: one frontal face, (512, 512, 3) uint8 RGB."""
    return skimage_data.astronaut()


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
