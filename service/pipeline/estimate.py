"""The pipeline's entry point, ``estimate_faces``: decoded images -> faces with poses and meshes.

The application core calls only this. Each image runs its preset's stages
(``pipeline.presets``); a video frame (``ImageRequest.follow``) follows its stream's faces
(``pipeline.follow``). Images sharing a preset share every model call, video frames of many
streams included.
"""

from __future__ import annotations

from service.pipeline.finish import finish
from service.pipeline.follow import follow_faces
from service.pipeline.presets import PRESETS
from service.pipeline.records import ImageRequest, ImageResult, ImageWork, Preset
from service.runtime.base import InferenceRuntime


def run_preset(runtime: InferenceRuntime, requests: list[ImageRequest], preset: Preset
               ) -> list[ImageResult]:
    works = [ImageWork.unlocated(r) for r in requests]
    for stage in preset.stages:
        works = stage(runtime, works, preset)
    return [finish(runtime, work, preset) for work in works]


def estimate_faces(runtime: InferenceRuntime, requests: list[ImageRequest],
                   preset: Preset | None = None) -> list[ImageResult]:
    """Faces, poses and meshes for each image, in order: each with the preset its options
    name, or all with ``preset``; video frames followed from their streams' last landmarks."""
    groups: dict[tuple[str, bool], tuple[Preset, list[int]]] = {}
    for i, request in enumerate(requests):
        chosen = preset or PRESETS[request.options.quality]
        groups.setdefault((chosen.name, request.follow is not None), (chosen, []))[1].append(i)
    results: list[ImageResult | None] = [None] * len(requests)
    for (_, video), (chosen, indices) in groups.items():
        run = follow_faces if video else run_preset
        for i, result in zip(indices, run(runtime, [requests[i] for i in indices], chosen),
                             strict=True):
            results[i] = result
    assert all(r is not None for r in results)  # every image is in one group
    return [r for r in results if r is not None]
