from __future__ import annotations

from importlib import resources

import numpy as np

from service.pipeline.solve import load_canonical_face

# The mesh's face outline on the subject's right, from eye level down to the chin.
RIGHT_OUTLINE = [127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152]
SYMMETRIC_PAIRS = [(0, 16), (4, 12), (17, 26), (21, 22), (31, 35), (36, 45), (39, 42),
                   (48, 54), (60, 64)]


def raw() -> dict[str, np.ndarray]:
    with resources.files("service.data").joinpath("canonical_face.npz").open("rb") as handle:
        return dict(np.load(handle))


def test_shapes_and_units() -> None:
    data = raw()
    assert data["vertices_mm"].shape == (468, 3)
    assert data["triangles"].shape == (898, 3)
    assert data["procrustes_weights"].shape == (468,)
    assert np.allclose(data["vertices_mm"][0], [0.0, -34.06404, 59.79507], atol=1e-4)
    assert data["triangles"].min() == 0 and data["triangles"].max() == 467
    assert len(np.unique(data["triangles"])) == 468


def test_landmarks68_are_unique_and_symmetric() -> None:
    face = load_canonical_face()
    indices = face.landmarks68
    assert len(set(indices.tolist())) == 68
    points = face.vertices_mm[indices]
    for right, left in SYMMETRIC_PAIRS:
        mirrored = points[left] * [-1, 1, 1]
        assert np.linalg.norm(points[right] - mirrored) < 2.0, (right, left)
        assert points[right][0] < 0 < points[left][0]
    # In the OpenCV-axes model frame the nose tip is the point nearest the camera.
    assert np.argmin(points[:, 2]) in (30, 33)


def test_jaw_follows_the_outline_in_equal_steps() -> None:
    face = load_canonical_face()
    outline = face.vertices_mm[RIGHT_OUTLINE]
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(outline, axis=0), axis=1))])
    steps = np.linspace(0, arc[-1], 9)
    expected = [RIGHT_OUTLINE[int(np.argmin(np.abs(arc - s)))] for s in steps]
    assert face.landmarks68[:9].tolist() == expected
