"""Detect: letterboxed images -> face boxes, six keypoints and scores, after NMS.

Keypoint order (the subject's own left/right): right eye, left eye, nose tip, mouth centre,
right ear tragion, left ear tragion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from service.pipeline.scores import sigmoid
from service.runtime.base import InferenceRuntime, infer

NUM_KEYPOINTS = 6
REGRESSOR_SIZE = 4 + 2 * NUM_KEYPOINTS


@dataclass(frozen=True)
class AnchorLayout:
    """How a BlazeFace-style detector tiles its input with anchors (a fact of the trained model)."""

    strides: tuple[int, ...]
    anchors_per_stride: int
    min_score: float


SHORT_RANGE, FULL_RANGE = "face_detector_short", "face_detector_full"
# The short-range model sees 128 px, the full-range 192 px; both come from MediaPipe's graphs.
ANCHOR_LAYOUTS = {
    SHORT_RANGE: AnchorLayout(strides=(8, 16, 16, 16), anchors_per_stride=2, min_score=0.5),
    FULL_RANGE: AnchorLayout(strides=(4,), anchors_per_stride=1, min_score=0.5),
}


@dataclass
class Detections:
    """Faces found in one image, in image pixels; N faces."""

    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2
    keypoints: np.ndarray  # (N, 6, 2) x, y
    scores: np.ndarray  # (N,)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros((0, NUM_KEYPOINTS, 2)), np.zeros(0))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: np.ndarray) -> Detections:
        return Detections(self.boxes[index], self.keypoints[index], self.scores[index])


@lru_cache(maxsize=8)
def make_anchors(layout: AnchorLayout, input_size: int) -> np.ndarray:
    """Anchor centres in [0, 1] input coordinates, in the model's output order.

    Returns: (A, 2) x, y.
    """
    centres = []
    strides = list(layout.strides)
    while strides:
        stride = strides[0]
        # Consecutive layers of one stride share a grid; their anchors sit together per cell.
        repeats = 0
        while strides and strides[0] == stride:
            strides.pop(0)
            repeats += 1
        cells = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, repeats * layout.anchors_per_stride, axis=0))
    anchors = np.concatenate(centres).astype(np.float32)
    anchors.setflags(write=False)  # shared by every call through the cache
    return anchors


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit an image into a size x size square, keeping its aspect ratio, padded with black.

    image: (H, W, 3) uint8 RGB.
    Returns: the square (size, size, 3) uint8 and the affine map (2, 3) from square pixels to
    image pixels.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    # Area averaging, slow as it is (0.6 ms from 450x450 to 128): halving by averaging and then
    # one bilinear step took a fifth of that, but lost 2 of 979 AFLW faces and 1 of 6 in a
    # group photo.
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    square = np.zeros((size, size, 3), np.uint8)
    square[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    to_image = np.array([[1 / scale, 0, -pad_x / scale], [0, 1 / scale, -pad_y / scale]])
    return square, to_image


def decode_boxes(
    regressors: np.ndarray, anchors: np.ndarray, input_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw regressors -> boxes and keypoints in input pixels.

    regressors: (A, 16) dx, dy, w, h, then six keypoint (dx, dy), in input pixels from the anchor.
    anchors: (A, 2) anchor centres in [0, 1].
    Returns: boxes (A, 4) x1, y1, x2, y2 and keypoints (A, 6, 2).
    """
    offsets = anchors * input_size
    centre = regressors[:, 0:2] + offsets
    half = regressors[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = regressors[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + offsets[:, None, :]
    return boxes, keypoints


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box against (N, 4) boxes, all x1, y1, x2, y2. Returns (N,)."""
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(detections: Detections, iou_threshold: float = 0.3) -> Detections:
    """Merge overlapping detections into their score-weighted mean, best first.

    Averaging the cluster instead of keeping only its best member steadies the boxes, which
    the crop, and so the mesh, depends on.
    """
    remaining = np.argsort(-detections.scores)
    boxes, keypoints, scores = [], [], []
    while len(remaining):
        best = remaining[0]
        overlap = box_iou(detections.boxes[best], detections.boxes[remaining]) > iou_threshold
        cluster = remaining[overlap]
        weights = detections.scores[cluster] / detections.scores[cluster].sum()
        boxes.append(weights @ detections.boxes[cluster])
        keypoints.append(np.tensordot(weights, detections.keypoints[cluster], axes=1))
        scores.append(detections.scores[best])
        remaining = remaining[~overlap]
    if not scores:
        return Detections.empty()
    return Detections(np.array(boxes), np.array(keypoints), np.array(scores))


def detect_in_squares(
    runtime: InferenceRuntime, model: str, squares: Sequence[np.ndarray], to_image: np.ndarray,
    min_score: float | Sequence[float],
) -> list[Detections]:
    """Batched detector calls over square views of images, a model batch at a time.

    squares: N (S, S, 3) uint8 RGB at the model's input size (an array or a list of views);
    to_image: (N, 2, 3) affine maps from square pixels to image pixels, without rotation;
    min_score: one for all, or (N,). Each batch is stacked, run and decoded before the next:
    a batch of 32 1080p photos searched down to 48 px is 2,500 squares, whose inputs and
    outputs at once would take 280 MB.
    """
    spec = runtime.specs[model]
    layout = ANCHOR_LAYOUTS[model]
    anchors = make_anchors(layout, spec.image_input.size)
    thresholds = np.broadcast_to(np.maximum(np.asarray(min_score, np.float64), layout.min_score),
                                 (len(squares),))
    results: list[Detections] = []
    batch = max(1, spec.max_batch_size)  # 0: a model without batching takes one at a time
    for start in range(0, len(squares), batch):
        part = slice(start, start + batch)
        results += _detect_batch(runtime, model, anchors, np.stack(squares[part]),
                                 to_image[part], thresholds[part])
    return results


def _detect_batch(runtime: InferenceRuntime, model: str, anchors: np.ndarray,
                  squares: np.ndarray, to_image: np.ndarray, thresholds: np.ndarray
                  ) -> list[Detections]:
    spec = runtime.specs[model]
    image_input = spec.image_input
    outputs = infer(runtime, model, {image_input.name: image_input.batch(squares)})
    regressors = outputs[spec.output_with_size(len(anchors) * REGRESSOR_SIZE).name]
    logits = outputs[spec.output_with_size(len(anchors)).name]
    results = []
    for square_regressors, square_logits, affine, threshold in zip(
        regressors.reshape(len(squares), -1, REGRESSOR_SIZE),
        logits.reshape(len(squares), -1),
        to_image,
        thresholds,
        strict=True,
    ):
        scores = sigmoid(square_logits)
        keep = scores >= threshold
        boxes, keypoints = decode_boxes(square_regressors[keep], anchors[keep], image_input.size)
        scale, offset = np.diag(affine[:, :2]), affine[:, 2]
        found = Detections(boxes * np.tile(scale, 2) + np.tile(offset, 2),
                           keypoints * scale + offset, scores[keep])
        results.append(weighted_nms(found))
    return results


def run_detector(
    runtime: InferenceRuntime, model: str, images: list[np.ndarray], min_score: float
) -> list[Detections]:
    """Detect faces in whole images, letterboxed. images: each (H, W, 3) uint8 RGB."""
    squares, to_image = letterboxed(images, runtime.specs[model].image_input.size)
    return detect_in_squares(runtime, model, squares, to_image, min_score)


def letterboxed(images: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each image letterboxed into a square of ``size``: (N, S, S, 3) uint8 squares and their
    (N, 2, 3) square-to-image maps."""
    squares, to_image = zip(*(letterbox(image, size) for image in images), strict=True)
    return np.stack(squares), np.stack(to_image)


def merge_detections(primary: Detections, secondary: Detections) -> Detections:
    """Primary detections plus the secondary ones that overlap none of them."""
    if not len(primary):
        return secondary
    novel = [
        i for i in range(len(secondary))
        if box_iou(secondary.boxes[i], primary.boxes).max() < 0.3
    ]
    index = np.array(novel, dtype=int)
    extra = secondary.take(index)
    return Detections(
        np.concatenate([primary.boxes, extra.boxes]),
        np.concatenate([primary.keypoints, extra.keypoints]),
        np.concatenate([primary.scores, extra.scores]),
    )


# A box holding another face's box (this much of its area inside) is that face's, not a face
# of its own: NMS keeps both, their IoU being small where one is twice the other's side.
ENCLOSED_SHARE = 0.8
# An enclosing box this many times the enclosed one's side, around the same centre (within
# this share of its side), is a loose box around that face unless the detector is sure of it.
LOOSE_BOX_SIDE_RATIO = 2.0
LOOSE_BOX_CENTRE_SHARE = 0.25
LOOSE_BOX_SURE_SCORE = 0.75


def drop_enclosing_boxes(found: Detections) -> Detections:
    """One face, one answer: a box is dropped where it holds another face's box that scores
    at least as well, or that it is a loose box around (several times its side about the same
    centre, at a score the detector is unsure of). A 640x480 photo of a 60 px face gave the
    face and a 150 px box around it at 0.56, and the loose box was posed as a face."""
    if len(found) < 2:
        return found
    boxes, scores = found.boxes, found.scores
    sides = np.max(boxes[:, 2:] - boxes[:, :2], axis=1)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    keep = np.ones(len(found), bool)
    for outer in range(len(found)):
        top_left = np.maximum(boxes[outer, :2], boxes[:, :2])
        bottom_right = np.minimum(boxes[outer, 2:], boxes[:, 2:])
        inside = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        enclosed = (areas > 0) & (inside >= ENCLOSED_SHARE * areas) & (sides < sides[outer])
        enclosed[outer] = False
        better = enclosed & (scores >= scores[outer])
        loose = enclosed & (sides[outer] >= LOOSE_BOX_SIDE_RATIO * sides) & (
            np.linalg.norm(centres - centres[outer], axis=1)
            <= LOOSE_BOX_CENTRE_SHARE * sides[outer]) & (scores[outer] < LOOSE_BOX_SURE_SCORE)
        keep[outer] = not (better.any() or loose.any())
    return found.take(np.flatnonzero(keep))


# --- tiles: faces smaller than the whole-image pass can see ------------------------------------

# The detector's input, per face: the short-range model finds 98% of faces whose 68-point box
# spans 20 px of its 128 (87% at 16, 33% at 12; measured on AFLW faces pasted on blurred
# photos). A tile is sized so that the smallest face searched spans this much of it.
TILE_FACE_PX = 20
# Tiles overlap by this share of their side, so a face up to about a third of a tile lies whole
# in one of them; one level of tiles covers faces up to twice its smallest, the next level
# (tiles twice as large) the rest.
TILE_OVERLAP = 0.4
# A detection within this share of a tile's side from an edge the tile shares with another is
# a cut face: it lies whole in the neighbour, and is dropped here.
TILE_EDGE_MARGIN = 0.02
# A level is searched for faces up to twice its smallest (detector boxes of up to about 0.4 of
# the tile); a larger box in a tile is the next level's or the whole image's to find, and in a
# tile mostly a suit or a hand taken for a face.
TILE_MAX_BOX = 0.45
# Every tile is another chance for a face-like patch to pass, so a face found in a tile needs
# this score. On scripts/eval_recall.py's everyday canvases (seeds 0 and 1), 0.6 against 0.65
# found 48 px faces 86/84% against 84/79% and 64 px 95/98% against 94/92%, with the same false
# faces there, none on its canvases without a face or on the large canvases, and on the large
# dev set 12 and 15 faces besides the labelled ones (balanced, accurate) against 12 and 14. A
# score of 0.5 let through patches a blurred background held.
TILE_MIN_SCORE = 0.6
# Tiles go to the short-range model, so its whole-image pass shares their call.
TILE_MODEL = SHORT_RANGE


# What a pass over the whole image is trusted to find: faces spanning 16 px of the input (87%
# of them; the full-range model, where it runs too, finds 92% there). A photo whose smallest
# face asked for is that large pays for no tiles.
WHOLE_IMAGE_FACE_PX = 16


def whole_image_min_face_px(width: int, height: int, input_size: int) -> float:
    """The smallest face a letterboxed pass over the whole image finds, image pixels."""
    return max(width, height) * WHOLE_IMAGE_FACE_PX / input_size


def tiles_needed(width: int, height: int, input_size: int, min_face_px: float) -> bool:
    """Whether faces of ``min_face_px`` need tiles: the whole pass sees only larger ones."""
    return whole_image_min_face_px(width, height, input_size) > min_face_px


def max_reduction_for(min_face_px: float | None) -> int:
    """The largest JPEG reduction at which a face of ``min_face_px`` still spans a tile's
    worth of pixels, so that tiles are never upsampled."""
    reduction = 1
    while min_face_px is not None and reduction < 8 and min_face_px / (2 * reduction) >= (
            TILE_FACE_PX):
        reduction *= 2
    return reduction if min_face_px is not None else 8


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    count = int(np.ceil((length - tile) / step)) + 1
    return [round(s) for s in np.linspace(0, length - tile, count)]


def tile_levels(width: int, height: int, input_size: int, min_face_px: float
                ) -> list[tuple[int, list[tuple[int, int]]]]:
    """(tile side, top-left corners) per level, smallest tiles first, until the whole-image
    pass sees the faces the next level would; empty where it already sees ``min_face_px``."""
    levels: list[tuple[int, list[tuple[int, int]]]] = []
    if not tiles_needed(width, height, input_size, min_face_px):
        return levels
    whole = whole_image_min_face_px(width, height, input_size)
    smallest = min_face_px
    while smallest < whole:
        side = max(input_size, round(input_size * smallest / TILE_FACE_PX))
        if side >= max(width, height):
            break
        step = max(1, int(side * (1 - TILE_OVERLAP)))
        levels.append((side, [(x, y) for y in _starts(height, side, step)
                              for x in _starts(width, side, step)]))
        smallest = side * TILE_FACE_PX / input_size * 2
    return levels


def _level_image(image: np.ndarray, side: int, size: int, corners: list[tuple[int, int]]
                 ) -> tuple[np.ndarray, float]:
    """The image scaled once so that a tile of ``side`` is ``size`` pixels, black past its
    edges as far as the tiles reach, and the scale. One area resize per level, not one per
    tile: six tiles of a 640x480 frame cost 4.9 ms resized one by one."""
    height, width = image.shape[:2]
    scale = size / side
    scaled = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                        interpolation=cv2.INTER_AREA)
    reach_x = max(round(x * scale) for x, _ in corners) + size
    reach_y = max(round(y * scale) for _, y in corners) + size
    if reach_x > scaled.shape[1] or reach_y > scaled.shape[0]:
        padded = np.zeros((max(reach_y, scaled.shape[0]), max(reach_x, scaled.shape[1]), 3),
                          np.uint8)
        padded[:scaled.shape[0], :scaled.shape[1]] = scaled
        scaled = padded
    return scaled, scale


@dataclass(frozen=True)
class Tile:
    image: int  # index of the image it is cut from
    x: int
    y: int
    side: int  # image pixels


def tile_squares(images: list[np.ndarray], min_faces_px: Sequence[float | None], size: int
                 ) -> tuple[list[Tile], list[np.ndarray], list[list[list[float]]]]:
    """The tiles that find faces down to each image's ``min_faces_px`` (None: none searched
    for): where each is, its pixels at the detector's input ``size``, its square-to-image map."""
    tiles, squares, to_image = [], [], []
    for index, (image, min_face) in enumerate(zip(images, min_faces_px, strict=True)):
        if min_face is None:
            continue
        height, width = image.shape[:2]
        for side, corners in tile_levels(width, height, size, min_face):
            scaled, scale = _level_image(image, side, size, corners)
            for x, y in corners:
                left, top = round(x * scale), round(y * scale)
                tiles.append(Tile(index, x, y, side))
                squares.append(scaled[top:top + size, left:left + size])
                to_image.append([[1 / scale, 0.0, left / scale], [0.0, 1 / scale, top / scale]])
    return tiles, squares, to_image


def keep_tile_detections(images: list[np.ndarray], tiles: list[Tile],
                         detected: list[Detections]) -> list[Detections]:
    """Each image's faces from its tiles' detections: those cut by a shared tile edge or too
    large for their tile dropped, the rest merged."""
    found: list[list[Detections]] = [[] for _ in images]
    for tile, detections in zip(tiles, detected, strict=True):
        height, width = images[tile.image].shape[:2]
        x, y, side = tile.x, tile.y, tile.side
        margin = TILE_EDGE_MARGIN * side
        boxes = detections.boxes
        # An edge shared with a neighbouring tile (not the image's own) cuts faces.
        cut = ((x > 0) & (boxes[:, 0] < x + margin)) | ((y > 0) & (boxes[:, 1] < y + margin)) | (
            (x + side < width) & (boxes[:, 2] > x + side - margin)) | (
            (y + side < height) & (boxes[:, 3] > y + side - margin))
        large = np.max(boxes[:, 2:] - boxes[:, :2], axis=1) > TILE_MAX_BOX * side
        found[tile.image].append(detections.take(np.flatnonzero(~cut & ~large)))
    return [weighted_nms(Detections(
        np.concatenate([d.boxes for d in parts]), np.concatenate([d.keypoints for d in parts]),
        np.concatenate([d.scores for d in parts]))) if parts else Detections.empty()
        for parts in found]


def detect_whole_and_tiles(runtime: InferenceRuntime, images: list[np.ndarray],
                           min_faces_px: Sequence[float | None], min_score: float
                           ) -> tuple[list[Detections], list[Detections]]:
    """The tile model over each whole image (letterboxed) and over its tiles (see
    ``tile_squares``), in one batched call: on Triton one round trip, not two.

    Returns per image: the whole-image detections, and the tiles' (empty where none).
    """
    size = runtime.specs[TILE_MODEL].image_input.size
    whole, whole_to_image = letterboxed(images, size)
    tiles, squares, tile_to_image = tile_squares(images, min_faces_px, size)
    detected = detect_in_squares(
        runtime, TILE_MODEL, [*whole, *squares],
        np.concatenate([whole_to_image, np.array(tile_to_image).reshape(-1, 2, 3)]),
        [min_score] * len(images) + [max(min_score, TILE_MIN_SCORE)] * len(squares))
    return detected[:len(images)], keep_tile_detections(images, tiles, detected[len(images):])


def detect_in_tiles(runtime: InferenceRuntime, images: list[np.ndarray],
                    min_faces_px: Sequence[float | None], min_score: float) -> list[Detections]:
    """The tile model over each image's tiles alone (see ``tile_squares``), in one batched
    call: for images whose whole pass has run already. Empty where an image has no tiles."""
    size = runtime.specs[TILE_MODEL].image_input.size
    tiles, squares, to_image = tile_squares(images, min_faces_px, size)
    if not tiles:
        return [Detections.empty() for _ in images]
    detected = detect_in_squares(runtime, TILE_MODEL, squares, np.array(to_image),
                                 max(min_score, TILE_MIN_SCORE))
    return keep_tile_detections(images, tiles, detected)
