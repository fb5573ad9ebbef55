"""The pipeline's stages. Each takes the records of a batch of images and returns new ones.

A stage sees every image of the batch at once so that each model call covers all of them; a
preset (``pipeline.presets``) is the list of stages that run and their parameters. Every
stage after ``locate`` is optional: ``scripts/ablate.py`` measures what each one buys.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache, lru_cache

import numpy as np

from service.metrics import STAGE_SECONDS
from service.pipeline.align import (
    DETECTION_CROP_SCALE,
    NUM_VERTICES,
    Regions,
    crop_points_to_image,
    crop_regions,
    crop_to_image_transforms,
    eye_line_angle,
    regions_from_detections,
    regions_from_landmarks,
)
from service.pipeline.detect import (
    FULL_RANGE,
    SHORT_RANGE,
    Detections,
    box_iou,
    detect_in_squares,
    detect_in_tiles,
    detect_whole_and_tiles,
    drop_enclosing_boxes,
    merge_detections,
    run_detector,
    tiles_needed,
    whole_image_min_face_px,
)
from service.pipeline.mesh import MESH_V1, mesh_input_size, mesh_points, run_mesh
from service.pipeline.mirror import (
    mirror_boxes,
    mirror_camera,
    mirror_keypoints,
    mirror_landmarks,
    mirror_regions,
    unmirror_rotation,
)
from service.pipeline.records import FullRange, ImageRequest, ImageWork, MirrorFrom, Preset
from service.pipeline.scale import rescale_boxes, rescale_camera, rescale_regions, rescale_xy
from service.pipeline.solve import (
    MESH_TRUSTED_PRESENCE,
    KeypointUse,
    euler_pitch_yaw_roll_deg,
    face_pose,
    load_canonical_face,
    mean_rotation,
    pose_with_rotation,
)
from service.runtime.base import InferenceRuntime


@cache
def side_calls() -> ThreadPoolExecutor:
    """The threads for model calls a pipeline run makes beside its own thread's; made on
    first use, not on import."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="side-model-call")


# --- locate: boxes, scores, keypoints and first crops, from the detectors or the client --------

@lru_cache(maxsize=1)
def _tight_box_to_region() -> tuple[np.ndarray, float]:
    """Centre offset and side, in units of the box's longer side, from a box tight around the
    68 iBUG points to the landmark crop region, measured on the frontal canonical face."""
    face = load_canonical_face()
    xy = face.vertices_mm[:, :2]
    tight = xy[face.landmarks68]
    tight_low, tight_high = tight.min(axis=0), tight.max(axis=0)
    full_low, full_high = xy.min(axis=0), xy.max(axis=0)
    unit = (tight_high - tight_low).max()
    offset = ((full_low + full_high) - (tight_low + tight_high)) / 2 / unit
    side = (full_high - full_low).max() / unit * DETECTION_CROP_SCALE
    return offset, float(side)


def regions_from_client_boxes(boxes: np.ndarray, angles: np.ndarray) -> Regions:
    """Regions for boxes as tight as the 68 landmarks, placed where the mesh crop would be.

    boxes: (N, 4); angles: (N,) in-plane angle of each face's eye line.
    """
    offset, side = _tight_box_to_region()
    longer = np.max(boxes[:, 2:] - boxes[:, :2], axis=1)
    cos, sin = np.cos(angles), np.sin(angles)
    # The offset is along the face's own axes, which the angle turns in the image.
    shift = np.stack([cos * offset[0] - sin * offset[1], sin * offset[0] + cos * offset[1]], 1)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 + shift * longer[:, None]
    return Regions(centres, longer * side, angles)


def keypoints_in_boxes(runtime: InferenceRuntime, images: list[np.ndarray],
                       boxes: list[np.ndarray]) -> list[np.ndarray]:
    """The detector's six keypoints for faces whose boxes the client gave, NaN where the
    detector finds no face there. One batched call over a view around every box.

    Returns per image (N, 6, 2) image pixels.
    """
    size = runtime.specs[SHORT_RANGE].image_input.size
    views = [Regions((b[:, :2] + b[:, 2:]) / 2, np.max(b[:, 2:] - b[:, :2], axis=1) * 2,
                     np.zeros(len(b))) for b in boxes]
    if not sum(len(v) for v in views):
        return [np.zeros((0, 6, 2)) for _ in boxes]
    squares = np.concatenate([crop_regions(im, v, size) for im, v in zip(images, views,
                                                                          strict=True)])
    to_image = np.concatenate([crop_to_image_transforms(v, size) for v in views])
    found = iter(detect_in_squares(runtime, SHORT_RANGE, squares, to_image, min_score=0.3))
    results = []
    for image_boxes in boxes:
        keypoints = np.full((len(image_boxes), 6, 2), np.nan)
        for i, box in enumerate(image_boxes):
            detections = next(found)
            if len(detections):
                centres = (detections.boxes[:, :2] + detections.boxes[:, 2:]) / 2
                distance = np.linalg.norm(centres - (box[:2] + box[2:]) / 2, axis=1)
                best = int(np.argmin(distance))
                if distance[best] < 0.5 * np.max(box[2:] - box[:2]):
                    keypoints[i] = detections.keypoints[best]
        results.append(keypoints)
    return results


# A face whose box spans this share of the image's longer side is large: the short-range
# detector sees it well, and an image holding one is a portrait, not a far scene.
LARGE_FACE_OF_IMAGE = 0.1


def scored(found: Detections, request: ImageRequest) -> Detections:
    """The detections at the request's min_score or above."""
    return found.take(np.flatnonzero(found.scores >= request.options.min_score))


def has_face_of(found: Detections, side_px: float, min_score: float = 0.0) -> bool:
    """Whether a detection of ``min_score`` or more is ``side_px`` or more on its longer side."""
    sides = np.max(found.boxes[:, 2:] - found.boxes[:, :2], axis=1)
    return bool(((sides >= side_px) & (found.scores >= min_score)).any())


def is_portrait(found: Detections, search: FaceSearch) -> bool:
    """One face (of those ``scored``), the whole pass sure of it and it at least
    ``search.portrait_px``: the image needs no search for smaller ones. Two or more faces are
    a group, searched whatever their size."""
    return (search.portrait_px is not None and len(found) == 1
            and has_face_of(found, search.portrait_px, PORTRAIT_MIN_SCORE))


def has_large_face(found: Detections, request: ImageRequest) -> bool:
    """Whether a detection (of those ``scored``) spans LARGE_FACE_OF_IMAGE of the image's
    longer side."""
    return has_face_of(found, LARGE_FACE_OF_IMAGE * max(request.image.shape[:2]))


# In an everyday image, where the whole pass sees faces down to EVERYDAY_WHOLE_OF_ASKED times
# the smallest the preset asks for (768 px or less for 48 px), that size is searched for (in
# tiles, in a second detector call) only where the whole pass found no portrait
# (``is_portrait``): a portrait, a selfie or a webcam frame of one person pays nothing for the
# search, a group round a table or a person across the room gets it. A larger image, whose
# faces asked for are mostly below the whole pass, gets its tiles in that pass's call (one call
# and one round trip on Triton, not two), as does a client's own min_face_px, always searched.
#
# A portrait is one face the whole pass is sure of (this score) and PORTRAIT_FACE_OF_WHOLE
# times the size it sees: 92 px in a 640 px frame, where the bench's one face (a 98 px box)
# skips 6 tiles (14 ms on 2 cores), and the group photo's 51-62 px boxes and pasted 64 px faces
# (boxes up to about 85 px) are searched. A tenth of the image (the full-range model's rule)
# would be 64 px there, and a group of 64 px faces would lose its search. A loose box around a
# small face (score 0.56) must not stop the search that finds the face.
PORTRAIT_MIN_SCORE = 0.75
EVERYDAY_WHOLE_OF_ASKED = 2.0
PORTRAIT_FACE_OF_WHOLE = 1.15


@dataclass(frozen=True)
class FaceSearch:
    """How small a face one image is searched for, in its own pixels."""

    whole_px: float  # what the whole-image pass sees
    asked_px: float | None = None  # the smallest face asked for; None: the whole pass only
    # A lone sure face this large ends the search (``is_portrait``); None: always searched.
    portrait_px: float | None = None

    @property
    def tiles_first(self) -> float | None:
        """The smallest face the first call's tiles search for (None: no tiles there)."""
        return self.asked_px if self.portrait_px is None else None

    def searched_px(self, tiled: bool) -> float:
        return self.asked_px if tiled and self.asked_px is not None else self.whole_px


def face_search(request: ImageRequest, preset: Preset, input_size: int) -> FaceSearch:
    """The client's smallest face or the preset's, or the whole pass alone where it sees that
    or neither asks. input_size: that of the short-range detector, whose whole-image pass every
    preset runs."""
    height, width = request.image.shape[:2]
    whole = whole_image_min_face_px(width, height, input_size)
    asked = preset.min_face_asked(request.options.min_face_px)
    if asked is None or not tiles_needed(width, height, input_size, asked / request.reduction):
        return FaceSearch(whole)
    asked_px = asked / request.reduction
    if request.options.min_face_px is not None or whole > EVERYDAY_WHOLE_OF_ASKED * asked_px:
        return FaceSearch(whole, asked_px)
    return FaceSearch(whole, asked_px, PORTRAIT_FACE_OF_WHOLE * whole)


def detect_faces(runtime: InferenceRuntime, requests: list[ImageRequest], preset: Preset,
                 searches: list[FaceSearch]) -> list[tuple[Detections, float]]:
    """The short-range detector, the better one on large faces, and the full-range one that
    finds the small faces it misses where the preset says; one batched call each. Where faces
    smaller than a whole-image pass sees are searched for (``searches``), the short-range
    call covers tiles too, or a second call does where the first found no large face.
    Returns per image its faces and the smallest face searched for, its own pixels."""
    if not requests:
        return []
    full_range = preset.full_range
    images = [r.image for r in requests]
    lowest = min(r.options.min_score for r in requests)
    full = [Detections.empty() for _ in images]
    first = [search.tiles_first for search in searches]
    if full_range is FullRange.ALWAYS:
        # The two models are independent and the runtimes release the GIL: side by side, a
        # lone request's detection takes the longer model's time, not both.
        full_range_call = side_calls().submit(run_detector, runtime, FULL_RANGE, images, lowest)
        short, tiled = detect_whole_and_tiles(runtime, images, first, lowest)
        full = full_range_call.result()
    else:
        short, tiled = detect_whole_and_tiles(runtime, images, first, lowest)
    # Each image's own min_score, once: the calls answered the lowest of the batch.
    short, tiled, full = ([scored(d, r) for d, r in zip(ds, requests, strict=True)]
                          for ds in (short, tiled, full))
    # A large face the tiles found counts: the whole pass misses faces under 16 of its pixels,
    # which on a 1080p photo are still a tenth of it.
    found_first = [merge_detections(t, s) for s, t in zip(short, tiled, strict=True)]
    later = [i for i, search in enumerate(searches) if search.portrait_px is not None
             and not is_portrait(drop_enclosing_boxes(found_first[i]), search)]
    small = ([i for i, request in enumerate(requests)
              if not has_large_face(found_first[i], request)]
             if full_range is FullRange.WHERE_NO_LARGE_FACE else [])
    if later or small:
        # The full-range model and the later tiles side by side, as above.
        full_range_call = side_calls().submit(
            run_detector, runtime, FULL_RANGE, [images[i] for i in small], lowest) if small \
            else None
        try:
            for i, found in zip(later, detect_in_tiles(
                    runtime, [images[i] for i in later], [searches[i].asked_px for i in later],
                    lowest), strict=True):
                tiled[i] = scored(found, requests[i])
        finally:
            # Waited for whatever happens here: its thread's work, and error, are this call's.
            full_found = full_range_call.result() if full_range_call is not None else []
        for i, found in zip(small, full_found, strict=True):
            full[i] = scored(found, requests[i])
    results, tiled_later = [], set(later)
    for index, (s, f, t, request) in enumerate(zip(short, full, tiled, requests, strict=True)):
        # A face found in a tile as well keeps the tile's box: the tile saw it larger and
        # without the letterbox's padding, which on a wide photo inflates the box.
        found = drop_enclosing_boxes(merge_detections(t, merge_detections(s, f)))
        found = found.take(np.argsort(-found.scores)[: request.options.max_faces])
        searched = searches[index].searched_px(
            searches[index].tiles_first is not None or index in tiled_later)
        results.append((found, searched))
    return results


def locate(runtime: InferenceRuntime, works: list[ImageWork], preset: Preset
           ) -> list[ImageWork]:
    """Each image's faces from the detectors, or from its client's boxes."""
    requests = [w.request for w in works]
    to_detect = [i for i, r in enumerate(requests) if r.boxes is None]
    given = [i for i, r in enumerate(requests) if r.boxes is not None]
    with STAGE_SECONDS.labels("detect").time():
        size = runtime.specs[SHORT_RANGE].image_input.size
        detected = detect_faces(runtime, [requests[i] for i in to_detect], preset,
                                [face_search(requests[i], preset, size) for i in to_detect])
        client_boxes = [requests[i].boxes[: requests[i].options.max_faces] for i in given
                        if requests[i].boxes is not None]
        client_keypoints = keypoints_in_boxes(runtime, [requests[i].image for i in given],
                                              client_boxes) if given else []
    located = list(works)
    for i, (found, min_face) in zip(to_detect, detected, strict=True):
        located[i] = replace(works[i], boxes=found.boxes, scores=found.scores,
                             keypoints=found.keypoints,
                             regions=regions_from_detections(found.boxes, found.keypoints),
                             min_face_px=min_face)
    for i, box, keypoints in zip(given, client_boxes, client_keypoints, strict=True):
        angles = np.nan_to_num(eye_line_angle(keypoints[:, 0], keypoints[:, 1]))
        located[i] = replace(works[i], boxes=box, scores=np.ones(len(box)), keypoints=keypoints,
                             regions=regions_from_client_boxes(box, angles))
    return located


# --- sharpen: a finer decode where the faces are small --------------------------------------

def sharpen(runtime: InferenceRuntime, works: list[ImageWork], preset: Preset
            ) -> list[ImageWork]:
    """Decode again, less reduced, each image whose smallest face would otherwise reach the
    mesh model upsampled; its located faces moved to the new pixels."""
    mesh_size = mesh_input_size(runtime, preset.mesh_model)
    sharpened = []
    for work in works:
        request = work.request
        if request.reduction == 1 or request.redecode is None or not len(work):
            sharpened.append(work)
            continue
        smallest = float(work.regions.sides.min())
        finer = request.reduction
        # Eyes are a tenth of the face: the iris model needs every pixel there is.
        while finer > 1 and (request.options.iris
                             or smallest * request.reduction / finer < mesh_size):
            finer //= 2
        if finer == request.reduction:
            sharpened.append(work)
            continue
        factor = request.reduction / finer
        request = replace(
            request, image=request.redecode(finer), reduction=finer,
            camera=rescale_camera(request.camera, factor),
            boxes=None if request.boxes is None else rescale_boxes(request.boxes, factor))
        sharpened.append(replace(work, request=request, boxes=rescale_boxes(work.boxes, factor),
                                 keypoints=rescale_xy(work.keypoints, factor),
                                 regions=rescale_regions(work.regions, factor),
                                 min_face_px=None if work.min_face_px is None
                                 else work.min_face_px * factor))
    return sharpened


# --- fit, refit, search_lost: the mesh ---------------------------------------------------------

def fit_meshes(runtime: InferenceRuntime, images: list[np.ndarray], regions: list[Regions],
               model: str, points: int | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """All faces of all images through the mesh model ``model`` in one call.

    Returns per image: landmarks (N, P, 3) in image pixels (P: 468, or 478 with V2's irises;
    ``points``, if given, with NaN for those the model does not give) and presence (N,).
    """
    crop_size = mesh_input_size(runtime, model)
    counts = [len(r) for r in regions]
    points = points or mesh_points(runtime, model)
    if not sum(counts):
        return ([np.zeros((0, points, 3)) for _ in regions], [np.zeros(0) for _ in regions])
    with STAGE_SECONDS.labels("crop").time():
        crops = [crop_regions(image, r, crop_size)
                 for image, r in zip(images, regions, strict=True)]
    with STAGE_SECONDS.labels("mesh").time():
        landmarks, presence = run_mesh(runtime, np.concatenate(crops), model)
    transforms = np.concatenate([crop_to_image_transforms(r, crop_size) for r in regions])
    landmarks = crop_points_to_image(landmarks, transforms)
    if landmarks.shape[1] < points:
        missing = np.full((len(landmarks), points - landmarks.shape[1], 3), np.nan)
        landmarks = np.concatenate([landmarks, missing], axis=1)
    splits = np.cumsum(counts)[:-1]
    return np.split(landmarks, splits), np.split(presence, splits)


def _with_fits(works: list[ImageWork], landmarks: list[np.ndarray],
               presence: list[np.ndarray]) -> list[ImageWork]:
    return [replace(w, landmarks=lm, presence=p, poses=None)
            for w, lm, p in zip(works, landmarks, presence, strict=True)]


# FaceMesh V2's presence score says "face" on face-like patches that V1 rejects (a 61 px
# badge on the astronaut's suit: V2 logit 8.7, V1 -5.3; real faces 20 and up for both). Where
# the detector is unsure too, V1 checks the crop.
CONFIRM_BELOW_SCORE = 0.8


def confirmed(runtime: InferenceRuntime, works: list[ImageWork], regions: list[Regions],
              preset: Preset) -> list[ImageWork]:
    """The fitted faces the detector is unsure of kept present only where the search model
    (V1) finds a face in the same crops too. regions: the crops the fit used, per image."""
    if preset.search_model is None or preset.search_model == preset.mesh_model:
        return works
    unsure = [np.flatnonzero(w.scores < CONFIRM_BELOW_SCORE) for w in works]
    if not sum(len(u) for u in unsure):
        return works
    _, checked = fit_meshes(runtime, [w.request.image for w in works],
                            [r.take(u) for r, u in zip(regions, unsure, strict=True)],
                            preset.search_model)
    result = []
    for work, faces, check in zip(works, unsure, checked, strict=True):
        presence = work.presence.copy()
        presence[faces] = np.minimum(presence[faces], check)
        result.append(replace(work, presence=presence))
    return result


def fit(runtime: InferenceRuntime, works: list[ImageWork], preset: Preset) -> list[ImageWork]:
    """The mesh fitted in the first crops (the faces the detector is unsure of confirmed)."""
    regions = [w.regions for w in works]
    return confirmed(runtime, _with_fits(works, *fit_meshes(
        runtime, [w.request.image for w in works], regions, preset.mesh_model)), regions, preset)


def refit(runtime: InferenceRuntime, works: list[ImageWork], preset: Preset
          ) -> list[ImageWork]:
    """The mesh fitted again in a crop placed from its first landmarks.

    The first fit only places the face; the second crops it the way the mesh model was trained
    to see it (tracking's landmark rule), whatever the first crop came from. A second fit only
    where the crop moved much was tried: a first crop 10% off in scale still moves pitch and
    yaw by 2 degrees, and a flipped image then gets a different pose.
    """
    regions = [regions_from_landmarks(w.landmarks) if w.landmarks is not None and len(w)
               else w.regions for w in works]
    return confirmed(runtime, _with_fits(works, *fit_meshes(
        runtime, [w.request.image for w in works], regions, preset.mesh_model)), regions, preset)


# Crops tried around a face the mesh lost: centred on its first region, on the mean of its
# eye, nose and mouth keypoints, and halfway; at the first region's side and 0.8 of it; turned
# as the first region or upright (on a profile the detector's eye line is a poor guess).
SEARCH_CENTRE_WEIGHTS = (0.0, 0.5, 1.0)
SEARCH_SCALES = (1.0, 0.8)
SEARCH_TURNS = (True, False)
# The best of many crops is accepted only on a clearly higher score: with a dozen tries, a
# middling maximum is as often a face part the model half-recognises.
SEARCH_ACCEPT_PRESENCE = 0.8


def search_lost(runtime: InferenceRuntime, works: list[ImageWork], preset: Preset
                ) -> list[ImageWork]:
    """Each face whose presence is low refitted from the best of a few other crops.

    On near-profile faces the detector's box, and so the first crop, sits off the face and the
    mesh model loses it, while a crop a little off the box finds it again. One batched mesh
    call covers every lost face of the batch.
    """
    lost, candidates = [], []
    for i, work in enumerate(works):
        if work.presence is None:
            continue
        first = work.regions
        for j in np.flatnonzero(work.presence < MESH_TRUSTED_PRESENCE):
            if not np.isfinite(work.keypoints[j]).all():
                continue
            inner = work.keypoints[j, :4].mean(axis=0)
            tries = list(itertools.product(SEARCH_CENTRE_WEIGHTS, SEARCH_SCALES, SEARCH_TURNS))
            # Each lost face's candidate crops go through the mesh as the faces of one image.
            candidates.append(Regions(
                np.array([(1 - w) * first.centres[j] + w * inner for w, _, _ in tries]),
                np.array([first.sides[j] * s for _, s, _ in tries]),
                np.array([first.angles[j] if t else 0.0 for _, _, t in tries])))
            lost.append((i, j))
    if not lost:
        return works
    points = next(w.landmarks.shape[1] for w in works if w.landmarks is not None)
    found, found_presence = fit_meshes(runtime, [works[i].request.image for i, _ in lost],
                                       candidates, preset.search_model or preset.mesh_model,
                                       points)
    landmarks = {i: w.landmarks.copy() for i, w in enumerate(works) if w.landmarks is not None}
    presence = {i: w.presence.copy() for i, w in enumerate(works) if w.presence is not None}
    for (i, j), candidate_landmarks, candidate_presence in zip(lost, found, found_presence,
                                                                strict=True):
        best = int(np.argmax(candidate_presence))
        if candidate_presence[best] >= SEARCH_ACCEPT_PRESENCE:
            landmarks[i][j] = candidate_landmarks[best]
            presence[i][j] = candidate_presence[best]
    return [replace(w, landmarks=landmarks[i], presence=presence[i], poses=None)
            if i in landmarks else w for i, w in enumerate(works)]


# The stages that fit the mesh in crops, in the order they run; the mirrored fit and the
# tracker's detection frames run those of them a preset has.
FIT_STAGES = (fit, refit, search_lost)


def run_fit_stages(runtime: InferenceRuntime, works: list[ImageWork], preset: Preset
                   ) -> list[ImageWork]:
    """The preset's mesh-fitting stages alone, in its order."""
    for stage in preset.stages:
        if stage in FIT_STAGES:
            works = stage(runtime, works, preset)
    return works


# --- solve, mirror: the pose ------------------------------------------------------------------

def keypoint_use(preset: Preset, landmarks: np.ndarray) -> KeypointUse:
    """How this face's pose uses the detector keypoints (none where the preset says so).

    - FaceMesh V2's fits: never. V2 carries the turn itself: blended in, its MAE on the faces
      the FaceLandmarker also finds rose by 0.25 degree (0.9 at 30-60 degrees of yaw).
    - V1's fits in a V1 preset: blended in on turned faces (V1's yaw comes out short).
    - V1's fits in a V2 preset, the profiles V1 refinds after V2 lost them: the keypoints'
      rotation alone. On the large dev set, against blending: ``balanced`` 4.08 -> 3.97 over
      all faces found, ``accurate`` 4.27 -> 4.03, its boxes-mode MAE 4.78 -> 4.55; against
      V1's own rotation, 4.27, 4.49 and 4.99.
    """
    if not preset.keypoint_blend:
        return KeypointUse.NEVER
    # V1's faces have no V2 iris points: none, or NaN where V2 faces share the array.
    fitted_by_v1 = (len(landmarks) == NUM_VERTICES
                    or not np.isfinite(landmarks[NUM_VERTICES:]).all())
    if not fitted_by_v1:
        return KeypointUse.NEVER
    return KeypointUse.TURNED if preset.mesh_model == MESH_V1 else KeypointUse.ALWAYS


def solve(runtime: InferenceRuntime, works: list[ImageWork], preset: Preset
          ) -> list[ImageWork]:
    """Each face's pose from its mesh, with the detector's keypoints blended in on turned
    faces where the preset says."""
    face_model = load_canonical_face()
    solved = []
    with STAGE_SECONDS.labels("solve").time():
        for work in works:
            solved.append(replace(work, poses=tuple(
                face_pose(lm, kp, p, face_model, work.request.camera,
                          keypoint_use(preset, lm))
                for lm, kp, p in zip(work.landmarks, work.keypoints, work.presence,
                                     strict=True))))
    return solved


def _mirrored_located(runtime: InferenceRuntime, works: list[ImageWork], preset: Preset
                      ) -> list[ImageWork]:
    """Each image mirrored with its faces, located afresh where the preset says.

    Detecting again, rather than mirroring the first detections, gives the keypoints their own
    left/right bias. A face not found again keeps its mirrored first detection.
    """
    mirrored = []
    for work in works:
        request, width = work.request, work.request.image.shape[1]
        # Copied once: OpenCV would copy a reversed view again for every resize and crop.
        mirrored_request = replace(
            request, image=np.ascontiguousarray(request.image[:, ::-1]),
            camera=mirror_camera(request.camera, width),
            boxes=None if request.boxes is None else mirror_boxes(work.boxes, width),
            redecode=None)
        mirrored.append(replace(
            work, request=mirrored_request, boxes=mirror_boxes(work.boxes, width),
            keypoints=mirror_keypoints(work.keypoints, width),
            regions=mirror_regions(work.regions, width),
            landmarks=None if work.landmarks is None else mirror_landmarks(work.landmarks,
                                                                           width),
            poses=None))
    if preset.mirror_from is not MirrorFrom.DETECTOR:
        return mirrored
    # The faces to relocate are known: no tiles for new small ones.
    again = locate(runtime, [ImageWork.unlocated(replace(m.request, options=replace(
        m.request.options, min_face_px=None))) for m in mirrored], replace(preset,
                                                                         min_face_px=None))
    relocated = []
    for fallback, found in zip(mirrored, again, strict=True):
        if fallback.request.boxes is not None:
            relocated.append(replace(found, landmarks=fallback.landmarks,
                                     presence=fallback.presence))
            continue
        picks = []
        for k, box in enumerate(fallback.boxes):
            overlaps = box_iou(box, found.boxes) if len(found) else np.zeros(0)
            best = int(np.argmax(overlaps)) if len(overlaps) else -1
            picks.append((found, best) if best >= 0 and overlaps[best] > 0.5
                         else (fallback, k))
        relocated.append(replace(
            fallback,
            boxes=np.array([src.boxes[m] for src, m in picks]).reshape(-1, 4),
            scores=np.array([src.scores[m] for src, m in picks]),
            keypoints=np.array([src.keypoints[m] for src, m in picks]).reshape(-1, 6, 2),
            regions=Regions(np.array([src.regions.centres[m] for src, m in picks]).reshape(-1, 2),
                            np.array([src.regions.sides[m] for src, m in picks]),
                            np.array([src.regions.angles[m] for src, m in picks]))))
    return relocated


def mirror(runtime: InferenceRuntime, works: list[ImageWork], preset: Preset
           ) -> list[ImageWork]:
    """Turned faces, and faces the mesh lost, fitted again in the mirrored image; the two
    rotations averaged.

    The mesh model is not left/right symmetric: its errors on a face and on its mirror image
    partly cancel, and it often finds in the mirror image a profile it lost in the original.
    """
    chosen = [np.array([j for j, pose in enumerate(w.poses)
                        if abs(euler_pitch_yaw_roll_deg(pose.r_cam_from_model)[1])
                        > preset.mirror_above_yaw_deg or w.presence[j] < MESH_TRUSTED_PRESENCE],
                       dtype=int) for w in works]
    if not any(len(c) for c in chosen):
        return works
    with STAGE_SECONDS.labels("mirror").time():
        mirrored = _mirrored_located(runtime, [w.take(c) for w, c in zip(works, chosen,
                                                                         strict=True)], preset)
        if preset.mirror_from is MirrorFrom.LANDMARKS:
            mirrored = refit(runtime, mirrored, preset)
        else:
            mirrored = run_fit_stages(runtime, mirrored, preset)
        mirrored = solve(runtime, mirrored, preset)
    face_model = load_canonical_face()
    averaged = []
    for work, faces, flipped in zip(works, chosen, mirrored, strict=True):
        if not len(faces):
            averaged.append(work)
            continue
        camera, width = work.request.camera, work.request.image.shape[1]
        landmarks, presence, poses = work.landmarks.copy(), work.presence.copy(), list(work.poses)
        back_landmarks = mirror_landmarks(flipped.landmarks, width)
        for j, pose, lm, p in zip(faces, flipped.poses, back_landmarks, flipped.presence,
                                  strict=True):
            if presence[j] < MESH_TRUSTED_PRESENCE <= p:
                landmarks[j], presence[j] = lm, p
                poses[j] = face_pose(lm, work.keypoints[j], p, face_model, camera,
                                     keypoint_use(preset, lm))
            r_mirrored = unmirror_rotation(pose.r_cam_from_model)
            if not np.isfinite(r_mirrored).all():
                continue
            evidence = replace(poses[j].evidence, from_mirror=r_mirrored)
            poses[j] = pose_with_rotation(mean_rotation(poses[j].r_cam_from_model, r_mirrored),
                                          landmarks[j], face_model, camera, evidence)
        averaged.append(replace(work, landmarks=landmarks, presence=presence,
                                poses=tuple(poses)))
    return averaged
