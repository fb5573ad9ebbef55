from __future__ import annotations

import numpy as np
import pytest

from service.errors import CorruptImage, EmptyImage, ImageTooLarge, UnsupportedImage
from service.pipeline.decode import decode_image
from tests.images import astronaut, encode, jpeg_with_orientation, png_header_only

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 40_000_000}


@pytest.mark.parametrize("extension", [".jpg", ".png", ".webp"])
def test_decodes_supported_formats_to_rgb(extension: str) -> None:
    image = astronaut()
    decoded = decode_image(encode(image, extension), **LIMITS)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    # RGB, not BGR: the astronaut's suit is mostly white but the flag has strong red.
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 3


def test_applies_exif_orientation() -> None:
    tall = np.zeros((60, 40, 3), np.uint8)
    tall[:10] = 255  # a white band along the stored top edge
    # Orientation 6: the stored image must be turned 90 degrees clockwise to display.
    decoded = decode_image(jpeg_with_orientation(tall, 6), **LIMITS)
    assert decoded.shape[:2] == (40, 60)
    assert decoded[:, -10:].mean() > 200 and decoded[:, :10].mean() < 50


def test_rejects_empty() -> None:
    with pytest.raises(EmptyImage):
        decode_image(b"", **LIMITS)


@pytest.mark.parametrize("data", [b"hello world, not an image", b"GIF89a" + b"\0" * 20])
def test_rejects_other_formats(data: bytes) -> None:
    with pytest.raises(UnsupportedImage):
        decode_image(data, **LIMITS)


@pytest.mark.parametrize("extension", [".jpg", ".png", ".webp"])
def test_rejects_truncated(extension: str) -> None:
    data = encode(astronaut(), extension)
    with pytest.raises(CorruptImage):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_rejects_pixel_bomb_from_header() -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(png_header_only(100_000, 100_000), **LIMITS)


def test_rejects_too_many_bytes() -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(encode(astronaut(), ".png"), max_bytes=1000, max_pixels=10**9)


@pytest.mark.parametrize(("extension", "keep", "words"), [
    (".jpg", 200, "JPEG file ends after 200 bytes"),
    (".jpg", 4, "JPEG file ends after 4 bytes"),
    (".png", 30, "PNG file ends after 30 bytes"),
    (".webp", 20, "WebP file ends after 20 bytes"),
])
def test_a_header_cut_short_is_said_so(extension: str, keep: int, words: str) -> None:
    """The message names what is wrong with the file, not the exception that found it."""
    with pytest.raises(CorruptImage) as refused:
        decode_image(encode(astronaut(), extension)[:keep], **LIMITS)
    assert words in refused.value.message and "cut short" in refused.value.message
    assert "Error" not in refused.value.message


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_a_damaged_header_is_said_so(extension: str) -> None:
    data = encode(astronaut(), extension)
    magic = 3 if extension == ".jpg" else 8
    with pytest.raises(CorruptImage) as refused:
        decode_image(data[:magic] + bytes(500), **LIMITS)
    assert "header is damaged" in refused.value.message
    assert "Error" not in refused.value.message
