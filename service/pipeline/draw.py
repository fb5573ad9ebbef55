"""Render: a photo with each face's box, score, mesh, head axes and angles drawn on it.

Drawing only; the geometry comes from the pipeline's results and ``visibility``. Everything is
antialiased, and line widths and text scale with the image, so the overlay reads the same on a
thumbnail and on a 24-megapixel photo, but no further than each face has room for: a small face
in a large photo is drawn to its own scale, not buried under its box. Images are RGB
throughout, as the pipeline's are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from service.pipeline.align import NUM_VERTICES
from service.pipeline.records import Face, ImageResult
from service.pipeline.solve import (
    Camera,
    euler_pitch_yaw_roll_deg,
    load_canonical_face,
)
from service.pipeline.visibility import visible_vertices

FORMATS = {"jpeg": ("image/jpeg", ".jpg"), "png": ("image/png", ".png")}
DRAWABLE = frozenset({"mesh", "landmarks", "landmarks68", "iris"})

BOX_RGB = (255, 196, 0)
MESH_RGB = (80, 255, 220)
IRIS_RGB = (255, 80, 200)
TEXT_RGB = (255, 255, 255)
# Text sits on a translucent dark panel, legible over any background.
PANEL_RGB = (0, 0, 0)
PANEL_OPACITY = 0.55
# x red, y green, z blue.
AXIS_RGB = ((235, 40, 40), (40, 210, 40), (50, 110, 255))
# A 468-vertex wireframe on a small face is dense: translucent, so the face shows through.
VISIBLE_OPACITY = 0.6
HIDDEN_OPACITY = 0.2
# The axes are drawn from the nose tip, this long in 3D.
AXIS_LENGTH_MM = 70.0
NOSE_TIP_VERTEX = 1
# The head frame the Euler angles are defined in (x the subject's left, y up, z out of the
# face), in the API's model axes (x right, y down, z into the face): columns.
HEAD_AXES_IN_MODEL = np.diag([1.0, -1.0, -1.0])
# Text 0.7 high (OpenCV's font scale) for a face this many pixels across, smaller for smaller
# faces down to 0.4, larger ones up to the image's own size.
TEXT_ROOM_PX = 110.0
FONT_SCALE_AT_ROOM, MIN_FONT_SCALE = 0.7, 0.4
# A face's box and axis lines are at most this many pixels per pixel of its side (2 px for a
# 72 px face; the image's 12 px lines at 4000 px would cover a third of it).
MAX_LINE_PER_FACE_PX = 1 / 36
# Fixed-point bits for sub-pixel line positions (cv2's `shift`).
SHIFT = 4


@dataclass(frozen=True)
class Style:
    """Sizes for one image, in pixels."""

    line: int
    font_scale: float
    font_line: int
    gap: int


def style_for(width: int, height: int) -> Style:
    """Line width and text size proportional to the image's longer side (2 px at 640)."""
    unit = max(width, height) / 640.0
    return Style(line=max(1, round(2 * unit)), font_scale=max(0.35, 0.55 * unit),
                 font_line=max(1, round(1.3 * unit)), gap=max(2, round(5 * unit)))


@lru_cache(maxsize=1)
def mesh_edges() -> np.ndarray:
    """(E, 2) the canonical face's unique triangle edges, vertex indices."""
    triangles = load_canonical_face().triangles
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)


def project(points_cam: np.ndarray, camera: Camera) -> np.ndarray | None:
    """(N, 2) pixels of camera-frame points (N, 3), or None if any is not in front."""
    if not (np.isfinite(points_cam).all() and (points_cam[:, 2] > 1e-3).all()):
        return None
    pixels = points_cam @ camera.matrix.T
    return pixels[:, :2] / pixels[:, 2:]


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates as cv2's fixed-point integers (see SHIFT)."""
    return np.round(points * (1 << SHIFT)).astype(np.int32)


def _paint(image: np.ndarray, roi: tuple[int, int, int, int], colour: tuple[int, int, int],
           opacity: float, draw: Callable[[np.ndarray, np.ndarray], None]) -> None:
    """Blend ``colour`` into ``image`` where ``draw`` marks a coverage mask, in place.

    cv2 draws opaque lines only; drawing antialiased coverage (0-255) into a mask and blending
    through it gives translucent, still antialiased strokes. ``draw(mask, origin)`` draws with
    value 255 at positions offset by ``-origin``. Only the region ``roi`` (x1, y1, x2, y2) is
    touched, so a face costs its own size, not the photo's.
    """
    x1, y1, x2, y2 = roi
    if x2 <= x1 or y2 <= y1:
        return
    mask = np.zeros((y2 - y1, x2 - x1), np.uint8)
    draw(mask, np.array([x1, y1], np.float64))
    alpha = mask.astype(np.float32) * (opacity / 255.0)
    patch = image[y1:y2, x1:x2].astype(np.float32)
    patch += (np.array(colour, np.float32) - patch) * alpha[..., None]
    image[y1:y2, x1:x2] = np.clip(np.round(patch), 0, 255).astype(np.uint8)


def _roi(points: np.ndarray, margin: int, width: int, height: int) -> tuple[int, int, int, int]:
    low = np.floor(points.min(axis=0)).astype(int) - margin
    high = np.ceil(points.max(axis=0)).astype(int) + margin + 1
    return (max(0, low[0]), max(0, low[1]), min(width, high[0]), min(height, high[1]))


def draw_wireframe(image: np.ndarray, landmarks_px: np.ndarray, visible: np.ndarray,
                   line: int) -> None:
    """The mesh's edges; an edge with a hidden end is drawn dimmer.

    landmarks_px: (468, 2) pixels; visible: (468,) bool.
    """
    height, width = image.shape[:2]
    edges = mesh_edges()
    shown = visible[edges].all(axis=1)
    roi = _roi(landmarks_px, line + 2, width, height)
    for chosen, opacity in ((~shown, HIDDEN_OPACITY), (shown, VISIBLE_OPACITY)):
        def draw(mask: np.ndarray, origin: np.ndarray, chosen: np.ndarray = chosen) -> None:
            segments = _fixed(landmarks_px[edges[chosen]] - origin)
            cv2.polylines(mask, list(segments), False, 255, line, cv2.LINE_AA, SHIFT)
        _paint(image, roi, MESH_RGB, opacity, draw)


def draw_points(image: np.ndarray, points_px: np.ndarray, visible: np.ndarray,
                radius: int) -> None:
    """Filled dots; hidden ones dimmer. points_px: (N, 2); visible: (N,) bool."""
    height, width = image.shape[:2]
    roi = _roi(points_px, radius + 2, width, height)
    for chosen, opacity in ((~visible, HIDDEN_OPACITY), (visible, VISIBLE_OPACITY)):
        def draw(mask: np.ndarray, origin: np.ndarray, chosen: np.ndarray = chosen) -> None:
            for centre in _fixed(points_px[chosen] - origin):
                cv2.circle(mask, tuple(int(v) for v in centre), radius << SHIFT, 255, -1,
                           cv2.LINE_AA, SHIFT)
        _paint(image, roi, MESH_RGB, opacity, draw)


def head_axes_px(face: Face, camera: Camera) -> tuple[np.ndarray, np.ndarray] | None:
    """The nose tip (2,) and the three axis ends (3, 2) in pixels, or None behind the camera.

    The axes are the head's, in the frame its Euler angles are defined in: x toward the
    subject's left (image right when facing the camera), y up, z out of the face.
    """
    rotation, translation = face.pose.r_cam_from_model, face.pose.t_cam_from_model_mm
    nose = rotation @ load_canonical_face().vertices_mm[NOSE_TIP_VERTEX] + translation
    ends = nose + AXIS_LENGTH_MM * (rotation @ HEAD_AXES_IN_MODEL).T
    pixels = project(np.vstack([nose, ends]), camera)
    if pixels is None:
        return None
    return pixels[0], pixels[1:]


def draw_axes(image: np.ndarray, face: Face, camera: Camera, line: int) -> None:
    axes = head_axes_px(face, camera)
    if axes is None:
        return
    origin, ends = axes
    rotation = face.pose.r_cam_from_model @ HEAD_AXES_IN_MODEL
    # The axis pointing furthest away is drawn first, so nearer ones cross over it.
    for k in np.argsort(-rotation[2]):
        length = float(np.linalg.norm(ends[k] - origin))
        tip = min(0.3, 6.0 * line / length) if length > 0 else 0.3
        cv2.arrowedLine(image, tuple(int(v) for v in _fixed(origin)),
                        tuple(int(v) for v in _fixed(ends[k])), AXIS_RGB[k], line + 1,
                        cv2.LINE_AA, SHIFT, tip)


@dataclass(frozen=True)
class Panel:
    """A block of text lines on a dark panel; ``rect`` (x1, y1, x2, y2) pixels, padding in."""

    lines: tuple[str, ...]
    rect: tuple[int, int, int, int]
    style: Style


def _block_size(lines: tuple[str, ...], style: Style) -> tuple[int, int, int]:
    """(width, height, line height) of the lines' text, without the padding."""
    sizes = [cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, style.font_scale, style.font_line)
             for text in lines]
    line_height = max(h + b for (_, h), b in sizes) + style.gap
    return max(w for (w, _), _ in sizes), line_height * len(lines), line_height


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    return (max(0, min(a[2], b[2]) - max(a[0], b[0]))
            * max(0, min(a[3], b[3]) - max(a[1], b[1])))


def place_panel(lines: tuple[str, ...], corners: list[tuple[float, float]], style: Style,
                taken: list[tuple[int, int, int, int]], width: int, height: int) -> Panel:
    """The lines' panel at the first of ``corners`` (top-left corners of the text, moved inside
    the image) where it covers nothing ``taken``, else where it covers least."""
    text_width, text_height, _ = _block_size(lines, style)
    pad = style.gap
    best: tuple[int, tuple[int, int, int, int]] | None = None
    for x, y in corners:
        x = int(min(max(x, pad), max(pad, width - text_width - pad)))
        y = int(min(max(y, pad), max(pad, height - text_height)))
        rect = (x - pad, y - pad, x + text_width + pad, y + text_height)
        covered = sum(_overlap(rect, other) for other in taken)
        if best is None or covered < best[0]:
            best = (covered, rect)
        if covered == 0:
            break
    assert best is not None
    return Panel(lines, best[1], style)


def face_style(style: Style, face_side_px: float) -> Style:
    """The image's style, no larger than a face of this size has room for: its lines would
    bury a small face, and in a group photo its panels would cover the neighbours."""
    wanted = max(MIN_FONT_SCALE, FONT_SCALE_AT_ROOM * face_side_px / TEXT_ROOM_PX)
    scale = min(1.0, wanted / style.font_scale)
    line = max(1, min(style.line, round(face_side_px * MAX_LINE_PER_FACE_PX)))
    return Style(line, style.font_scale * scale, max(1, round(style.font_line * scale)),
                 max(2, round(style.gap * scale)))


def draw_panel(image: np.ndarray, panel: Panel) -> None:
    style = panel.style
    x1, y1, x2, y2 = panel.rect
    height, width = image.shape[:2]
    _paint(image, (max(0, x1), max(0, y1), min(width, x2), min(height, y2)), PANEL_RGB,
           PANEL_OPACITY, lambda mask, origin: mask.fill(255))
    _, _, line_height = _block_size(panel.lines, style)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for row, text in enumerate(panel.lines):
        text_height = cv2.getTextSize(text, font, style.font_scale, style.font_line)[0][1]
        baseline = (x1 + style.gap, y1 + style.gap + row * line_height + text_height)
        cv2.putText(image, text, baseline, font, style.font_scale, TEXT_RGB, style.font_line,
                    cv2.LINE_AA)


def draw_face(image: np.ndarray, face: Face, camera: Camera, include: frozenset[str],
              style: Style) -> None:
    """One face's geometry: its mesh (or landmarks), irises, box and axes."""
    face_model = load_canonical_face()
    visible = visible_vertices(face.vertices_mm, face_model.triangles)
    landmarks = face.landmarks_px[:NUM_VERTICES, :2]  # V2's iris points: drawn as the irises
    side = float(np.max(face.box[2:] - face.box[:2]))
    style = face_style(style, side)
    # The mesh is finer still than the box: a line per 300 px of face.
    mesh_line = max(1, min(style.line, round(side / 300)))
    drawn = include & DRAWABLE
    if "mesh" in drawn or not drawn - {"iris"}:
        draw_wireframe(image, landmarks, visible, mesh_line)
    if "landmarks" in drawn:
        draw_points(image, landmarks, visible, max(1, round(side / 250)))
    if "landmarks68" in drawn:
        draw_points(image, landmarks[face_model.landmarks68],
                    visible[face_model.landmarks68], max(1, round(side / 80)))
    if "iris" in drawn and face.iris is not None:
        for eye in (face.iris.left, face.iris.right):
            cv2.circle(image, tuple(int(v) for v in _fixed(np.asarray(eye.centre))),
                       max(1, round(float(eye.radius_px) * (1 << SHIFT))), IRIS_RGB,
                       mesh_line, cv2.LINE_AA, SHIFT)
    x1, y1, x2, y2 = (float(v) for v in face.box)
    cv2.rectangle(image, tuple(int(v) for v in _fixed(np.array([x1, y1]))),
                  tuple(int(v) for v in _fixed(np.array([x2, y2]))), BOX_RGB, style.line,
                  cv2.LINE_AA, SHIFT)
    draw_axes(image, face, camera, style.line)


def face_panels(result: ImageResult, image_style: Style, width: int, height: int
                ) -> list[Panel]:
    """Per face, in the response's order: its number (as in the page's table) and score above
    its box, its angles beside it; each placed clear of the faces' boxes and of the panels
    placed before it where the image has room."""
    boxes: list[tuple[int, int, int, int]] = [
        (round(x1), round(y1), round(x2), round(y2)) for x1, y1, x2, y2 in
        (map(float, face.box) for face in result.faces)]
    taken = list(boxes)
    panels = []
    for number, (face, (x1, y1, x2, y2)) in enumerate(zip(result.faces, boxes, strict=True),
                                                       start=1):
        style = face_style(image_style, float(max(x2 - x1, y2 - y1)))
        label = (f"#{number}  {face.score:.2f}",)
        _, label_height, _ = _block_size(label, style)
        gap = 2 * style.gap + style.line
        label_panel = place_panel(label, [(x1, y1 - label_height - gap), (x1, y2 + gap),
                                          (x1 + gap, y1 + gap)], style, taken, width, height)
        taken.append(label_panel.rect)
        pitch, yaw, roll = euler_pitch_yaw_roll_deg(face.pose.r_cam_from_model)
        angles = (f"yaw {yaw:+.1f}", f"pitch {pitch:+.1f}", f"roll {roll:+.1f}")
        angles_width, angles_height, _ = _block_size(angles, style)
        angles_panel = place_panel(
            angles, [(x2 + gap, y1), (x1 - gap - angles_width, y1),
                     (x2 + gap, y2 - angles_height), (x1 - gap - angles_width, y2 - angles_height),
                     (x1, y2 + gap), (x1, y1 - angles_height - gap)], style, taken, width,
            height)
        taken.append(angles_panel.rect)
        panels += [label_panel, angles_panel]
    return panels


def render(image: np.ndarray, result: ImageResult, include: frozenset[str]) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) RGB with every face of ``result`` drawn on it, then the
    faces' panels over all of them.

    include: what to draw besides box, axes and angles: any of mesh (the default when none
    is given), landmarks, landmarks68, iris.
    """
    canvas = np.ascontiguousarray(image).copy()
    height, width = canvas.shape[:2]
    style = style_for(width, height)
    for face in result.faces:
        draw_face(canvas, face, result.camera, include, style)
    for panel in face_panels(result, style, width, height):
        draw_panel(canvas, panel)
    return canvas


def encode(image: np.ndarray, image_format: str) -> bytes:
    """``image`` (H, W, 3) RGB as JPEG (quality 90) or PNG bytes."""
    _, extension = FORMATS[image_format]
    params = ([cv2.IMWRITE_JPEG_QUALITY, 90] if image_format == "jpeg"
              else [cv2.IMWRITE_PNG_COMPRESSION, 3])
    ok, buffer = cv2.imencode(extension, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image_format} image")
    return buffer.tobytes()
