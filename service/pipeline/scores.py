"""Model logits -> probabilities."""

from __future__ import annotations

import numpy as np


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function in float64; clipped like MediaPipe's decoders, whose empty-anchor
    logits reach -1e4."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
