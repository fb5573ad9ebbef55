"""The pipeline's entry point, ``estimate_faces``: decoded images -> faces with poses and meshes.

The application core calls only this (and the tracker its stages).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import cache, lru_cache

import numpy as np

from service.metrics import STAGE_SECONDS
from service.pipeline.align import (
    DETECTION_CROP_SCALE,
    Regions,
    crop_points_to_image,
    crop_regions,
    crop_to_image_transforms,
    eye_line_angle,
    regions_from_detections,
    regions_from_landmarks,
)
from service.pipeline.detect import (
    Detections,
    box_iou,
    detect_in_squares,
    merge_detections,
    run_detector,
)
from service.pipeline.iris import run_iris
from service.pipeline.mesh import mesh_input_size, run_mesh
from service.pipeline.mirror import (
    mirror_boxes,
    mirror_camera,
    mirror_keypoints,
    mirror_landmarks,
    mirror_regions,
    unmirror_rotation,
)
from service.pipeline.records import Face, ImageRequest, ImageResult, PipelineOptions
from service.pipeline.scale import (
    rescale_boxes,
    rescale_camera,
    rescale_landmarks,
    rescale_regions,
    rescale_xy,
)
from service.pipeline.solve import (
    MESH_TRUSTED_PRESENCE,
    Pose,
    euler_pitch_yaw_roll_deg,
    face_pose,
    load_canonical_face,
    mean_rotation,
    mesh_in_camera_mm,
    pose_with_rotation,
)
from service.runtime.base import InferenceRuntime

SHORT_RANGE, FULL_RANGE = "face_detector_short", "face_detector_full"
# Faces turned further than this get a second, mirrored fit averaged in.
MIRROR_ABOVE_YAW_DEG = 25.0


@cache
def side_calls() -> ThreadPoolExecutor:
    """The threads for model calls a pipeline run makes beside its own thread's; made on
    first use, not on import."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="side-model-call")


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


def detect_faces(runtime: InferenceRuntime, images: list[np.ndarray], options: list[PipelineOptions]
                 ) -> list[Detections]:
    """Both detectors, each in one batched call: the short-range model is the better one on
    large faces, the full-range model finds the small ones it misses."""
    if not images:
        return []
    lowest = min(o.min_score for o in options)
    # The two models are independent and the runtimes release the GIL: side by side, a lone
    # request's detection takes the longer model's time, not both.
    short_range = side_calls().submit(run_detector, runtime, SHORT_RANGE, images, lowest)
    full = run_detector(runtime, FULL_RANGE, images, lowest)
    short = short_range.result()
    results = []
    for s, f, image_options in zip(short, full, options, strict=True):
        found = merge_detections(s, f)
        found = found.take(np.flatnonzero(found.scores >= image_options.min_score))
        results.append(found.take(np.argsort(-found.scores)[: image_options.max_faces]))
    return results


def fit_meshes(runtime: InferenceRuntime, images: list[np.ndarray],
                regions: list[Regions]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """All faces of all images through the mesh model in one call.

    Returns per image: landmarks (N, 468, 3) in image pixels and presence (N,).
    """
    crop_size = mesh_input_size(runtime)
    with STAGE_SECONDS.labels("crop").time():
        crops = [crop_regions(image, r, crop_size)
                 for image, r in zip(images, regions, strict=True)]
    counts = [len(r) for r in regions]
    with STAGE_SECONDS.labels("mesh").time():
        landmarks, presence = run_mesh(runtime, np.concatenate(crops))
    transforms = np.concatenate([crop_to_image_transforms(r, crop_size) for r in regions])
    landmarks = crop_points_to_image(landmarks, transforms) if len(landmarks) else landmarks
    splits = np.cumsum(counts)[:-1]
    return np.split(landmarks, splits), np.split(presence, splits)


# Crops tried around a face the mesh lost: centred on its first region, on the mean of its
# eye, nose and mouth keypoints, and halfway; at the first region's side and 0.8 of it; turned
# as the first region or upright (on a profile the detector's eye line is a poor guess).
SEARCH_CENTRE_WEIGHTS = (0.0, 0.5, 1.0)
SEARCH_SCALES = (1.0, 0.8)
SEARCH_TURNS = (True, False)
# The best of many crops is accepted only on a clearly higher score: with a dozen tries, a
# middling maximum is as often a face part the model half-recognises.
SEARCH_ACCEPT_PRESENCE = 0.8

Located = tuple[np.ndarray, np.ndarray, np.ndarray, Regions]  # boxes, scores, keypoints, regions


def search_lost_faces(runtime: InferenceRuntime, images: list[np.ndarray],
                      located: list[Located], landmarks: list[np.ndarray],
                      presence: list[np.ndarray]) -> None:
    """Refit, in place, each face whose presence is low from the best of a few other crops.

    On near-profile faces the detector's box, and so the first crop, sits off the face and the
    mesh model loses it, while a crop a little off the box finds it again. One batched mesh
    call covers every lost face of the request.
    """
    lost, centres, sides, angles = [], [], [], []
    for i, ((_, _, keypoints, first), image_presence) in enumerate(zip(located, presence,
                                                                        strict=True)):
        for j in np.flatnonzero(image_presence < MESH_TRUSTED_PRESENCE):
            if not np.isfinite(keypoints[j]).all():
                continue
            inner = keypoints[j, :4].mean(axis=0)
            for weight, scale, turned in itertools.product(SEARCH_CENTRE_WEIGHTS, SEARCH_SCALES,
                                                           SEARCH_TURNS):
                centres.append((1 - weight) * first.centres[j] + weight * inner)
                sides.append(first.sides[j] * scale)
                angles.append(first.angles[j] if turned else 0.0)
            lost.append((i, j))
    if not lost:
        return
    # Each lost face's candidate crops go through the mesh as the faces of one image.
    tries = len(SEARCH_CENTRE_WEIGHTS) * len(SEARCH_SCALES) * len(SEARCH_TURNS)
    candidates = [Regions(np.array(centres[k:k + tries]), np.array(sides[k:k + tries]),
                          np.array(angles[k:k + tries])) for k in range(0, len(centres), tries)]
    found, found_presence = fit_meshes(runtime, [images[i] for i, _ in lost], candidates)
    for (i, j), candidate_landmarks, candidate_presence in zip(lost, found, found_presence,
                                                                strict=True):
        best = int(np.argmax(candidate_presence))
        if candidate_presence[best] >= SEARCH_ACCEPT_PRESENCE:
            landmarks[i][j] = candidate_landmarks[best]
            presence[i][j] = candidate_presence[best]


def locate_faces(runtime: InferenceRuntime, requests: list[ImageRequest]) -> list[Located]:
    """Per image: boxes (N, 4), scores (N,), keypoints (N, 6, 2) and first crop regions, from
    the detectors or from the client's boxes."""
    to_detect = [i for i, r in enumerate(requests) if r.boxes is None]
    given = [i for i, r in enumerate(requests) if r.boxes is not None]
    with STAGE_SECONDS.labels("detect").time():
        detected = detect_faces(runtime, [requests[i].image for i in to_detect],
                                [requests[i].options for i in to_detect])
        client_boxes = [np.asarray(requests[i].boxes, np.float64).reshape(-1, 4)
                        [: requests[i].options.max_faces] for i in given]
        client_keypoints = keypoints_in_boxes(runtime, [requests[i].image for i in given],
                                              client_boxes) if given else []
    located: dict[int, Located] = {}
    for i, found in zip(to_detect, detected, strict=True):
        located[i] = (found.boxes, found.scores, found.keypoints,
                      regions_from_detections(found.boxes, found.keypoints))
    for i, box, keypoints in zip(given, client_boxes, client_keypoints, strict=True):
        angles = np.nan_to_num(eye_line_angle(keypoints[:, 0], keypoints[:, 1]))
        located[i] = (box, np.ones(len(box)), keypoints, regions_from_client_boxes(box, angles))
    return [located[i] for i in range(len(requests))]


def fit_faces(runtime: InferenceRuntime, images: list[np.ndarray], located: list[Located]
              ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image: landmarks (N, 468, 3) in image pixels and presence (N,) of located faces."""
    # The first fit only places the face; the second crops it the way the mesh model was
    # trained to see it (tracking's landmark rule), whatever the first region came from. A
    # second fit only where the crop moved much was tried: a first crop 10% off in scale
    # still moves pitch and yaw by 2 degrees, and a flipped image then gets a different pose.
    landmarks, _ = fit_meshes(runtime, images, [regions for *_, regions in located])
    refined = [regions_from_landmarks(lm) if len(lm) else r
               for lm, (*_, r) in zip(landmarks, located, strict=True)]
    landmarks, presence = fit_meshes(runtime, images, refined)
    search_lost_faces(runtime, images, located, landmarks, presence)
    return landmarks, presence


def _relocate_mirrored(runtime: InferenceRuntime, requests: list[ImageRequest],
                       mirrored_images: list[np.ndarray], located: list[Located],
                       chosen: list[np.ndarray]) -> list[Located]:
    """The chosen faces located afresh in the mirrored images, in the same order.

    Detecting again, rather than mirroring the first detections, is the point: the detector's
    keypoints carry their own left/right bias. A face not found again keeps its mirrored first
    detection.
    """
    mirrored_requests = [
        ImageRequest(mirrored, mirror_camera(r.camera, r.image.shape[1]), r.options,
                     None if r.boxes is None
                     else mirror_boxes(np.asarray(r.boxes, np.float64).reshape(-1, 4)[faces],
                                       r.image.shape[1]))
        for r, mirrored, faces in zip(requests, mirrored_images, chosen, strict=True)]
    found_again = locate_faces(runtime, mirrored_requests)
    relocated = []
    for request, (boxes, scores, keypoints, regions), faces, again in zip(
            requests, located, chosen, found_again, strict=True):
        width = request.image.shape[1]
        fallback = (mirror_boxes(boxes[faces], width), scores[faces],
                    mirror_keypoints(keypoints[faces], width),
                    mirror_regions(regions.take(faces), width))
        if request.boxes is not None:
            relocated.append(again)
            continue
        picks = []
        for k, box in enumerate(fallback[0]):
            overlaps = [box_iou(box, again[0][m:m + 1])[0] for m in range(len(again[0]))]
            best = int(np.argmax(overlaps)) if overlaps else -1
            picks.append((again, best) if best >= 0 and overlaps[best] > 0.5 else (fallback, k))
        relocated.append((
            np.array([src[0][m] for src, m in picks]).reshape(-1, 4),
            np.array([src[1][m] for src, m in picks]),
            np.array([src[2][m] for src, m in picks]).reshape(-1, 6, 2),
            Regions(np.array([src[3].centres[m] for src, m in picks]).reshape(-1, 2),
                    np.array([src[3].sides[m] for src, m in picks]),
                    np.array([src[3].angles[m] for src, m in picks]))))
    return relocated


def mirrored_fits(runtime: InferenceRuntime, requests: list[ImageRequest],
                  located: list[Located], chosen: list[np.ndarray]
                  ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image, its ``chosen`` faces fitted again on the mirrored image and mirrored back:
    rotations (K, 3, 3), landmarks (K, 468, 3) in image pixels and presence (K,). One batched
    pass over all images."""
    face_model = load_canonical_face()
    # Copied once: OpenCV would copy a reversed view again for every resize and crop.
    mirrored_images = [np.ascontiguousarray(r.image[:, ::-1]) for r in requests]
    relocated = _relocate_mirrored(runtime, requests, mirrored_images, located, chosen)
    landmarks, presence = fit_faces(runtime, mirrored_images, relocated)
    fits = []
    for request, (_, _, keypoints, _), image_landmarks, image_presence in zip(
            requests, relocated, landmarks, presence, strict=True):
        width = request.image.shape[1]
        camera = mirror_camera(request.camera, width)
        rotations = np.array([
            unmirror_rotation(face_pose(lm, kp, p, face_model, camera).r_cam_from_model)
            for lm, kp, p in zip(image_landmarks, keypoints, image_presence, strict=True)
        ]).reshape(-1, 3, 3)
        fits.append((rotations, mirror_landmarks(image_landmarks, width), image_presence))
    return fits


def sharpen(runtime: InferenceRuntime, requests: list[ImageRequest], located: list[Located]
            ) -> None:
    """Decode again, less reduced, each image whose smallest face would otherwise reach the
    mesh model upsampled; in place, its located faces moved to the new pixels."""
    mesh_size = mesh_input_size(runtime)
    for i, (request, (boxes, scores, keypoints, regions)) in enumerate(
            zip(requests, located, strict=True)):
        if request.reduction == 1 or request.redecode is None or not len(regions):
            continue
        smallest = float(regions.sides.min())
        finer = request.reduction
        # Eyes are a tenth of the face: the iris model needs every pixel there is.
        while finer > 1 and (request.options.iris
                             or smallest * request.reduction / finer < mesh_size):
            finer //= 2
        if finer == request.reduction:
            continue
        factor = request.reduction / finer
        requests[i] = replace(
            request, image=request.redecode(finer), reduction=finer,
            camera=rescale_camera(request.camera, factor),
            boxes=None if request.boxes is None else rescale_boxes(
                np.asarray(request.boxes, np.float64).reshape(-1, 4), factor))
        located[i] = (rescale_boxes(boxes, factor), scores, rescale_xy(keypoints, factor),
                      rescale_regions(regions, factor))


def to_full_size(result: ImageResult, reduction: int) -> ImageResult:
    """An image's result in full-size pixels; rotations, translations and metric meshes need
    no change."""
    if reduction == 1:
        return result
    for face in result.faces:
        face.box = rescale_boxes(face.box[None], reduction)[0]
        face.landmarks_px = rescale_landmarks(face.landmarks_px, reduction)
        face.pose = replace(face.pose,
                            reprojection_rmse_px=face.pose.reprojection_rmse_px * reduction)
    return ImageResult(rescale_camera(result.camera, reduction), result.faces)


def estimate_faces(runtime: InferenceRuntime, requests: list[ImageRequest]
                   ) -> list[ImageResult]:
    """Faces, poses and meshes for each image, in order."""
    if not requests:
        return []
    requests = list(requests)
    located = locate_faces(runtime, requests)
    sharpen(runtime, requests, located)
    landmarks, presence = fit_faces(runtime, [r.image for r in requests], located)

    face_model = load_canonical_face()
    poses: list[list[Pose]] = []
    with STAGE_SECONDS.labels("solve").time():
        for request, (_, _, keypoints, _), image_landmarks, image_presence in zip(
                requests, located, landmarks, presence, strict=True):
            poses.append([face_pose(lm, kp, p, face_model, request.camera)
                          for lm, kp, p in zip(image_landmarks, keypoints, image_presence,
                                               strict=True)])
    # A face the mesh lost is fitted mirrored too: the mesh model is not left/right symmetric,
    # and often finds in the mirror image a profile it lost in the original.
    turned = [np.array([j for j, pose in enumerate(image_poses)
                        if abs(euler_pitch_yaw_roll_deg(pose.r_cam_from_model)[1])
                        > MIRROR_ABOVE_YAW_DEG or image_presence[j] < MESH_TRUSTED_PRESENCE],
                       dtype=int) for image_poses, image_presence in zip(poses, presence,
                                                                          strict=True)]
    if any(len(faces) for faces in turned):
        with STAGE_SECONDS.labels("mirror").time():
            mirrored = mirrored_fits(runtime, requests, located, turned)
        for request, (_, _, keypoints, _), image_poses, image_landmarks, image_presence, faces, (
                rotations, mirrored_landmarks, mirrored_presence) in zip(
                requests, located, poses, landmarks, presence, turned, mirrored, strict=True):
            for j, r_mirrored, lm, p in zip(faces, rotations, mirrored_landmarks,
                                            mirrored_presence, strict=True):
                if image_presence[j] < MESH_TRUSTED_PRESENCE <= p:
                    image_landmarks[j], image_presence[j] = lm, p
                    image_poses[j] = face_pose(lm, keypoints[j], p, face_model, request.camera)
                if not np.isfinite(r_mirrored).all():
                    continue
                image_poses[j] = pose_with_rotation(
                    mean_rotation(image_poses[j].r_cam_from_model, r_mirrored),
                    image_landmarks[j], face_model, request.camera)

    results = []
    for request, (boxes, scores, _, _), image_landmarks, image_presence, image_poses in zip(
        requests, located, landmarks, presence, poses, strict=True
    ):
        result = ImageResult(request.camera)
        for box, score, face_landmarks, face_presence, pose in zip(
            boxes, scores, image_landmarks, image_presence, image_poses, strict=True
        ):
            if face_presence < request.options.min_presence:
                continue
            vertices = mesh_in_camera_mm(face_landmarks, pose, face_model.vertices_mm,
                                         request.camera)
            if not all(np.isfinite(a).all() for a in (box, face_landmarks, vertices,
                                                      pose.r_cam_from_model,
                                                      pose.t_cam_from_model_mm)):
                # A degenerate fit (noise the detector took for a face) has no pose to give.
                continue
            result.faces.append(Face(box, float(score), float(face_presence), pose,
                                     face_landmarks, vertices))
        if request.options.iris and result.faces:
            kept = np.stack([face.landmarks_px for face in result.faces])
            with STAGE_SECONDS.labels("iris").time():
                pairs = run_iris(runtime, request.image, kept)
            for face, pair in zip(result.faces, pairs, strict=True):
                face.iris = pair
        results.append(to_full_size(result, request.reduction))
    return results
