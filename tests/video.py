"""A synthetic video of a real face moving along a known smooth path, for tracking tests and
the tracking benchmark."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tests.images import astronaut, encode

# Where the astronaut's face is in skimage's 512x512 image (the centre of its 68 landmarks).
FACE_CENTRE = (225.0, 128.0)


@dataclass
class Video:
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB
    encoded: list[bytes]  # JPEG
    timestamps_ms: np.ndarray  # (F,)
    roll_deg: np.ndarray  # (F,) in-plane turn applied, clockwise positive (the API's roll)
    shift_px: np.ndarray  # (F, 2) the face centre's offset from the frame centre
    scale: np.ndarray  # (F,)


def synthetic_video(frames: int = 90, fps: float = 30.0, size: tuple[int, int] = (640, 480),
                    roll_amplitude_deg: float = 20.0, noise: float = 4.0, seed: int = 0
                    ) -> Video:
    """The astronaut turned in the image plane, moved and scaled along smooth periodic paths,
    with Gaussian pixel noise of ``noise`` grey levels per frame and JPEG encoding."""
    rng = np.random.default_rng(seed)
    width, height = size
    t = np.arange(frames) / fps
    roll = roll_amplitude_deg * np.sin(2 * np.pi * t / 3.0)
    shift = np.stack([60.0 * np.sin(2 * np.pi * t / 4.0),
                      25.0 * np.sin(2 * np.pi * t / 2.5)], axis=1)
    scale = 1.0 + 0.1 * np.sin(2 * np.pi * t / 5.0)
    source = astronaut()
    images, encoded = [], []
    for k in range(frames):
        # getRotationMatrix2D turns counter-clockwise for positive angles; roll is clockwise.
        matrix = cv2.getRotationMatrix2D(FACE_CENTRE, -roll[k], scale[k])
        matrix[:, 2] += np.array([width / 2, height / 2]) + shift[k] - FACE_CENTRE
        frame = cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        noisy = frame.astype(np.float64) + rng.normal(0.0, noise, frame.shape)
        frame = np.clip(noisy, 0, 255).astype(np.uint8)
        images.append(frame)
        encoded.append(encode(frame, ".jpg", 90))
    return Video(images, encoded, t * 1000.0, roll, shift, scale)
