"""The embedded runtimes side by side on real face crops: time per crop and output drift of
each model that the build gives in both forms (ONNX for ONNX Runtime, TFLite for LiteRT), and
what each runtime costs to install.

    python scripts/compare_runtimes.py [--photos DIR] [--count 100]

The crops are where the default pipeline fits the mesh on the photos (the large dev set; the
test astronaut where it is absent), one call per crop, one thread, as the gateway's CPU runs
them. Drift: LiteRT's outputs against ONNX Runtime's, landmarks in crop pixels.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import DEV_LARGE

from service.config import Settings
from service.pipeline.align import crop_regions
from service.pipeline.decode import decode_pixels
from service.pipeline.presets import PRESETS
from service.pipeline.records import ImageRequest, ImageWork, PipelineOptions
from service.pipeline.solve import default_camera
from service.pipeline.stages import locate
from service.runtime import create_runtime
from service.runtime.embedded import LITERT_MODEL, LiteRTModel, _session_options
from service.runtime.model_config import load_model_specs

PACKAGES = {"ONNX Runtime": "onnxruntime", "LiteRT": "ai-edge-litert"}


def installed_mb(distribution: str) -> float:
    files = importlib.metadata.files(distribution) or []
    return sum(f.locate().stat().st_size for f in files if f.locate().is_file()) / 1e6


def face_crops(photos: list[bytes], size: int) -> np.ndarray:
    """The first crop of each face the default preset's detectors find, at ``size``."""
    settings = Settings(embedded_litert_models=[])
    runtime = create_runtime(settings)
    crops = []
    try:
        for data in photos:
            image = decode_pixels(data)
            height, width = image.shape[:2]
            request = ImageRequest(image, default_camera(width, height, 40.0),
                                   PipelineOptions(4, 0.5, 0.5))
            (work,) = locate(runtime, [ImageWork.unlocated(request)], PRESETS["balanced"])
            if len(work):
                crops.append(crop_regions(image, work.regions, size))
    finally:
        runtime.close()
    return np.concatenate(crops)


def per_crop_ms(run: Callable[[list[str], dict[str, np.ndarray]], list[np.ndarray]],
                names: list[str], input_name: str, crops: np.ndarray
                ) -> tuple[float, list[list[np.ndarray]]]:
    """Median ms of one call per crop, and the outputs."""
    outputs, times = [], []
    for crop in crops:
        started = time.perf_counter()
        outputs.append(run(names, {input_name: crop[None]}))
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times), outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=DEV_LARGE)
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    settings = Settings()
    repository = settings.model_repository
    specs = load_model_specs(repository)
    if (args.photos / "images").is_dir():
        photos = [p.read_bytes() for p in sorted((args.photos / "images").glob("*.jpg"))
                  [: args.count]]
        source = f"{len(photos)} photos of {args.photos}"
    else:
        from tests.images import astronaut, encode

        photos, source = [encode(astronaut())], "the test astronaut (no photos found)"
    print(f"crops from {source}, one call per crop, one thread\n")
    print("| model | crops | ONNX Runtime ms | LiteRT ms | landmarks drift mean / max px "
          "| presence drift max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, spec in specs.items():
        directory = repository / name / "1"
        if not (directory / LITERT_MODEL).exists():
            continue
        crops = face_crops(photos, spec.image_input.size)
        batched = spec.image_input.batch(crops)
        session = ort.InferenceSession(str(directory / "model.onnx"), _session_options(1),
                                       providers=["CPUExecutionProvider"])
        litert = LiteRTModel(directory, spec, 1)
        names = [o.name for o in spec.outputs]
        input_name = spec.image_input.name

        onnx_ms, onnx_out = per_crop_ms(session.run, names, input_name, batched)
        lite_ms, lite_out = per_crop_ms(litert.run, names, input_name, batched)
        landmarks = names.index("landmarks")
        presence = names.index("presence")
        drift = np.concatenate([np.abs(a[landmarks] - b[landmarks]).ravel()
                                for a, b in zip(onnx_out, lite_out, strict=True)])
        presence_drift = max(float(np.abs(a[presence] - b[presence]).max())
                             for a, b in zip(onnx_out, lite_out, strict=True))
        print(f"| {name} | {len(crops)} | {onnx_ms:.2f} | {lite_ms:.2f} | "
              f"{drift.mean():.4f} / {drift.max():.4f} | {presence_drift:.2e} |")
    print("\n| runtime | installed MB |")
    print("| --- | --- |")
    for label, distribution in PACKAGES.items():
        print(f"| {label} (`{distribution}`) | {installed_mb(distribution):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
