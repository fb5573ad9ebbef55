"""Visibility: which vertices of a fitted face mesh the camera sees.

A vertex is visible when its normal faces the camera and no triangle of the mesh lies in front
of it along its line of sight. Both tests work in the camera frame (OpenCV axes, camera at the
origin); occlusion is tested in normalised image coordinates (x/z, y/z), where the intrinsics
would only scale and shift every point alike, so no camera is needed.

Plain numpy, called when serialising or rendering, not in the pipeline's hot path.
"""

from __future__ import annotations

import numpy as np

# A triangle hides a vertex only when it is this much nearer, relative to the vertex's depth:
# neighbouring triangles on a curved surface pass within a hair of a vertex without hiding it.
OCCLUSION_MARGIN = 0.01
# Points this close to a triangle's edge (in barycentric units) count as outside it, so a
# vertex on a shared edge is not hidden by the triangle across it.
EDGE_TOLERANCE = 1e-4


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, pointing out of the face.

    vertices: (V, 3); triangles: (T, 3) vertex indices, wound so that
    (v1 - v0) x (v2 - v0) points out of the face (the canonical face's winding, in any
    right-handed frame). Returns (V, 3); a vertex in no triangle gets a zero normal.
    """
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    face_normals = np.cross(b - a, c - a)  # length = twice the area: the weighting
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def facing_camera(vertices_cam: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V,) bool: the vertex normal points toward the camera at the origin.

    vertices_cam: (V, 3) camera frame (x right, y down, z forward).
    """
    normals = vertex_normals(vertices_cam, triangles)
    return np.einsum("ij,ij->i", normals, vertices_cam) < 0


def occluded(vertices_cam: np.ndarray, triangles: np.ndarray,
             candidates: np.ndarray | None = None) -> np.ndarray:
    """(V,) bool: some triangle not touching the vertex covers it and is nearer the camera.

    vertices_cam: (V, 3) camera frame, in front of the camera (z > 0); triangles: (T, 3);
    candidates: (V,) bool, the vertices worth testing (default all); the others read False.
    Exact point-in-triangle and depth tests, with no raster whose resolution could miss a
    thin part; a bounding-box screen keeps it to a few milliseconds per face.
    """
    count = len(vertices_cam)
    hidden = np.zeros(count, bool)
    tested = np.flatnonzero(np.ones(count, bool) if candidates is None else candidates)
    if not len(tested) or not len(triangles):
        return hidden
    depth = vertices_cam[:, 2]
    plane = vertices_cam[:, :2] / depth[:, None]  # normalised image coordinates
    p0, p1, p2 = (plane[triangles[:, k]] for k in range(3))
    edges = np.stack([p1 - p0, p2 - p0], axis=2)  # (T, 2, 2): columns e1, e2
    determinant = np.linalg.det(edges)
    proper = np.abs(determinant) > 1e-12  # edge-on triangles cover nothing
    inverse = np.zeros_like(edges)
    inverse[proper] = np.linalg.inv(edges[proper])

    # Only pairs whose point lies in the triangle's bounding box get the exact test: a few
    # thousand of the 400 thousand.
    corners = np.stack([p0, p1, p2])  # (3, T, 2)
    low, high = corners.min(axis=0), corners.max(axis=0)
    points = plane[tested]  # (P, 2)
    near = ((points[:, None, 0] > low[None, :, 0]) & (points[:, None, 0] < high[None, :, 0])
            & (points[:, None, 1] > low[None, :, 1]) & (points[:, None, 1] < high[None, :, 1]))
    near &= proper[None, :]
    pair_point, pair_triangle = np.nonzero(near)
    vertex = tested[pair_point]
    corner_ids = triangles[pair_triangle]  # (K, 3)
    offset = points[pair_point] - p0[pair_triangle]  # (K, 2)
    weights = np.einsum("kij,kj->ki", inverse[pair_triangle], offset)  # barycentric l1, l2
    l1, l2 = weights[:, 0], weights[:, 1]
    inside = ((l1 > EDGE_TOLERANCE) & (l2 > EDGE_TOLERANCE) & (l1 + l2 < 1 - EDGE_TOLERANCE)
              & (corner_ids != vertex[:, None]).all(axis=1))
    # 1/z is linear in image coordinates across a planar triangle.
    inverse_depth = ((1 - l1 - l2) / depth[corner_ids[:, 0]] + l1 / depth[corner_ids[:, 1]]
                     + l2 / depth[corner_ids[:, 2]])
    in_front = inverse_depth * depth[vertex] * (1 - OCCLUSION_MARGIN) > 1
    hidden[vertex[inside & in_front]] = True
    return hidden


def visible_vertices(vertices_cam: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V,) bool: facing the camera and not hidden by the mesh itself.

    vertices_cam: (V, 3) the fitted mesh in the camera frame, mm; triangles: (T, 3).
    A mesh not wholly in front of the camera has no sensible view: every vertex reads hidden.
    """
    vertices_cam = np.asarray(vertices_cam, np.float64)
    if not (np.isfinite(vertices_cam).all() and (vertices_cam[:, 2] > 0).all()):
        return np.zeros(len(vertices_cam), bool)
    facing = facing_camera(vertices_cam, triangles)
    # A vertex facing away is hidden already; only the facing ones need the occlusion test.
    return facing & ~occluded(vertices_cam, triangles, candidates=facing)
