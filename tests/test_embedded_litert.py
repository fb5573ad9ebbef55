"""The embedded runtime's LiteRT path gives what ONNX Runtime gives, in the same shapes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from service.config import REPO_ROOT
from service.runtime.embedded import EmbeddedRuntime
from tests.images import astronaut

REPOSITORY = REPO_ROOT / "model_repository"
V2 = "face_mesh_v2"


def crops() -> np.ndarray:
    """The astronaut's face, and two more views of it: (3, 256, 256, 3) uint8."""
    face = astronaut()[24:220, 127:323]
    return np.stack([cv2.resize(view, (256, 256)) for view in
                     (face, face[:, ::-1], face[10:-10, 5:-15])])


def test_litert_matches_onnx_runtime_at_any_batch() -> None:
    onnx_runtime = EmbeddedRuntime(REPOSITORY, litert_models=())
    litert = EmbeddedRuntime(REPOSITORY, litert_models=(V2,))
    images = crops()
    expected = onnx_runtime.infer(V2, {"image": images})
    for batch in (images[:1], images):
        found = litert.infer(V2, {"image": batch})
        assert found.keys() == expected.keys()
        for name, values in found.items():
            assert values.shape == (len(batch), *expected[name].shape[1:])
            np.testing.assert_allclose(values, expected[name][: len(batch)], atol=2e-3)


def test_litert_serves_threads_at_once() -> None:
    """Each thread has its own interpreter: concurrent calls give each their own answer."""
    litert = EmbeddedRuntime(REPOSITORY, litert_models=(V2,))
    images = crops()
    alone = [litert.infer(V2, {"image": image[None]})["landmarks"] for image in images]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda i: litert.infer(V2, {"image": images[i : i + 1]}),
                                 [0, 1, 2] * 4))
    for i, answer in enumerate(together):
        np.testing.assert_array_equal(answer["landmarks"], alone[i % 3])
