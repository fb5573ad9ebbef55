"""Checks on the committed canonical face model (service/data/canonical_face.npz)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

from service.pipeline.mirror import mirror_landmarks, vertex_mirror_order
from service.pipeline.solve import load_canonical_face

# The mesh's face outline on the subject's right, from eye level down to the chin.
RIGHT_OUTLINE = [127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152]
SYMMETRIC_PAIRS = [(0, 16), (4, 12), (17, 26), (21, 22), (31, 35), (36, 45), (39, 42),
                   (48, 54), (60, 64)]  # fmt: skip


def raw() -> dict[str, np.ndarray]:
    """The npz as stored (model frame: x right, y up, z toward the viewer), plain numpy load."""
    with resources.files("service.data").joinpath("canonical_face.npz").open("rb") as handle:
        return dict(np.load(handle))


def test_shapes_and_units() -> None:
    """Array shapes, dtypes, the first vertex in mm, and a mesh that uses every vertex."""
    data = raw()
    assert data["vertices_mm"].shape == (468, 3) and data["vertices_mm"].dtype == np.float64
    assert data["triangles"].shape == (898, 3) and data["triangles"].dtype == np.int32
    assert data["uv"].shape == (468, 2) and data["uv"].dtype == np.float32
    assert data["procrustes_weights"].shape == (468,)
    assert data["landmarks68"].shape == (68,) and data["landmarks68"].dtype == np.int32
    assert np.allclose(data["vertices_mm"][0], [0.0, -34.06404, 59.79507], atol=1e-4)
    assert data["triangles"].min() == 0 and data["triangles"].max() == 467
    assert len(np.unique(data["triangles"])) == 468
    assert np.count_nonzero(data["procrustes_weights"]) > 0
    assert data["procrustes_weights"].min() >= 0


def test_source_metadata() -> None:
    """Provenance names the pinned npm package, its hash and the byte range."""
    source = json.loads(str(raw()["source"]))
    assert source["package"] == "npm:@mediapipe/face_mesh@0.4.1657299874"
    assert source["tarball_sha256"].startswith("c08a7e0742a32628")
    assert "[3737848:3757224]" in source["file"]


def test_landmarks68_in_model_frame() -> None:
    """68 distinct in-range indices; the nose tip (30) is the point nearest the viewer (+z)."""
    data = raw()
    indices = data["landmarks68"]
    assert len(set(indices.tolist())) == 68
    assert indices.min() >= 0 and indices.max() < 468
    z = data["vertices_mm"][indices, 2]
    assert z[30] >= z.max() - 1.0


def test_landmarks68_are_unique_and_symmetric() -> None:
    """Left/right pairs mirror each other about x = 0 (the mesh itself is symmetric)."""
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
    """Jaw points 0-8 are the outline vertices nearest equal arc-length steps to the chin."""
    face = load_canonical_face()
    outline = face.vertices_mm[RIGHT_OUTLINE]
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(outline, axis=0), axis=1))])
    steps = np.linspace(0, arc[-1], 9)
    expected = [RIGHT_OUTLINE[int(np.argmin(np.abs(arc - s)))] for s in steps]
    assert face.landmarks68[:9].tolist() == expected


def test_mirroring_landmarks_twice_gives_them_back() -> None:
    """Each vertex's mirror twin is exact in the symmetric mesh, and mirroring is an involution."""
    order = vertex_mirror_order()
    vertices = load_canonical_face().vertices_mm
    assert np.allclose(vertices[order] * [-1, 1, 1], vertices, atol=1e-3)
    assert (order[order] == np.arange(len(order))).all()
    landmarks = np.random.default_rng(0).uniform(0, 100, (2, len(order), 3))
    assert np.allclose(mirror_landmarks(mirror_landmarks(landmarks, 640), 640), landmarks)
