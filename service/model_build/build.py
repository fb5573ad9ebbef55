"""`facepose models build`: fetch, convert, verify and install every model; a no-op when the
installed files still match their manifests.

    python -m service.model_build.build [--repo model_repository] [--cache DIR] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx

from service.model_build import ModelBuildError
from service.model_build.bundles import bundle_file
from service.model_build.convert import (
    ConversionFailed,
    batch_pinned_tensors,
    make_batch_dynamic,
    prelu_as_convolutions,
    shape_outputs,
    sort_initializers,
    tflite_to_onnx,
    uint8_nhwc_input,
)
from service.model_build.convert_blendshapes import blendshapes_to_onnx
from service.model_build.fetch import default_cache_dir, fetch_package, read_member, sha256_of
from service.model_build.sources import INPUT_NAME, MODEL_SOURCES, Bundle, ModelSource, Package
from service.model_build.verify import (
    BATCH_TOLERANCE,
    TOLERANCE,
    VerificationFailed,
    batch_difference,
    litert_differences,
    points_verification_inputs,
    session_for,
    verification_inputs,
)
from service.runtime.model_config import (
    LITERT_FEED,
    LITERT_MODEL,
    ModelSpec,
    parse_model_config,
)

# Bump when the conversion changes, so that existing builds are redone.
CONVERSION_VERSION = 8
MANIFEST = "manifest.json"


@dataclass
class BuiltModel:
    name: str
    input_shape: list[int]  # per batch item: (H, W, 3)
    outputs: dict[str, list[int]]  # name -> dims per batch item
    package: str
    package_sha256: str
    member: str
    tflite_sha256: str
    onnx_sha256: str
    max_abs_diff: float  # ONNX Runtime vs LiteRT, over all outputs and verification inputs
    output_diffs: dict[str, float]  # the same per output
    batch_diff: float  # one batch of N vs N batches of one
    verification_images: int
    conversion_version: int
    tflite2onnx: str
    rebuilt: bool = field(default=False, compare=False)


def model_path(repo: Path, name: str) -> Path:
    return repo / name / "1" / "model.onnx"


def _manifest_path(repo: Path, name: str) -> Path:
    return repo / name / "1" / MANIFEST


def load_spec(repo: Path, name: str) -> ModelSpec:
    path = repo / name / "config.pbtxt"
    if not path.exists():
        raise ModelBuildError(f"{path} is missing: every model needs its committed config")
    return parse_model_config(path.read_text())


def installed(repo: Path, source: ModelSource) -> BuiltModel | None:
    """The model's manifest if its files are present and match it, else None."""
    manifest, onnx_path = _manifest_path(repo, source.name), model_path(repo, source.name)
    if not (manifest.exists() and onnx_path.exists()):
        return None
    try:
        built = BuiltModel(**json.loads(manifest.read_text()))
    except (TypeError, ValueError):
        return None  # a manifest from another version of this code
    current = (built.package_sha256 == source.origin_sha256
               and (not source.install_tflite
                    or onnx_path.with_name(LITERT_MODEL).exists())
               and built.member == source.member
               and built.conversion_version == CONVERSION_VERSION
               and built.onnx_sha256 == sha256_of(onnx_path))
    return built if current else None


def check_against_config(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """The committed config.pbtxt must state the model's tensors exactly (dims without batch)."""
    def dims(values: list[onnx.ValueInfoProto]) -> dict[str, tuple[int, ...]]:
        return {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim[1:])
                for v in values}

    def dtypes(values: list[onnx.ValueInfoProto]) -> dict[str, np.dtype]:
        return {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
                for v in values}

    declared = ({t.name: t.dims for t in spec.inputs}, {t.name: t.dims for t in spec.outputs})
    actual = (dims(list(model.graph.input)), dims(list(model.graph.output)))
    if declared != actual:
        raise VerificationFailed(f"{spec.name}: config.pbtxt declares {declared[0]} -> "
                                 f"{declared[1]}, model.onnx has {actual[0]} -> {actual[1]}")
    declared_types = {t.name: np.dtype(t.dtype) for t in [*spec.inputs, *spec.outputs]}
    actual_types = dtypes([*model.graph.input, *model.graph.output])
    if declared_types != actual_types:
        raise VerificationFailed(f"{spec.name}: config.pbtxt declares types {declared_types}, "
                                 f"model.onnx has {actual_types}")
    if spec.max_batch_size < 2:
        raise VerificationFailed(f"{spec.name}: config.pbtxt max_batch_size must be over 1")


def convert(source: ModelSource, tflite_model: bytes) -> onnx.ModelProto:
    """The TFLite model as ONNX: uint8 NHWC input ``image`` (batch, S, S, 3), stable output
    names; a points model: input ``points`` (batch, K, 2)."""
    if source.points_from:
        model = blendshapes_to_onnx(tflite_model)
        model.producer_name = "facepose models build"
        model.doc_string = (f"{source.package.requirement}:{source.member}; input float32 "
                            f"points, image pixels")
        return model
    model = make_batch_dynamic(tflite_to_onnx(tflite_model))
    model = prelu_as_convolutions(uint8_nhwc_input(model, INPUT_NAME, source.input_range))
    model = sort_initializers(shape_outputs(model, source.outputs, source.outputs_in_order))
    model.producer_name = "facepose models build"
    model.doc_string = (f"{source.package.requirement}:{source.member}; input uint8 RGB NHWC, "
                        f"scaled to [{source.input_range[0]:g}, {source.input_range[1]:g}]")
    onnx.checker.check_model(model, full_check=True)
    pinned = batch_pinned_tensors(model)
    if pinned:
        raise ConversionFailed(f"{source.name}: batch still fixed at {pinned[:5]}")
    return model


def verify(source: ModelSource, tflite_model: bytes, model: onnx.ModelProto,
           origin: Path) -> tuple[dict[str, float], float, int]:
    """Per-output max |ONNX - LiteRT|, batch-N vs N x batch-1 difference, images used."""
    session = session_for(model)
    images = (points_verification_inputs(source, read_member(origin, source.points_from))
              if source.points_from else verification_inputs(source))
    differences = litert_differences(tflite_model, session, images, source)
    print(f"  {source.name}: max |onnx - litert| over {len(images)} images: "
          + ", ".join(f"{name} {value:.1e}" for name, value in differences.items()), flush=True)
    worst, limit = max(differences.values()), TOLERANCE * source.tolerance_scale
    if worst > limit:
        raise VerificationFailed(f"{source.name}: ONNX differs from LiteRT by up to {worst:.2e} "
                                 f"(limit {limit:g}): {differences}")
    batch = batch_difference(session, images)
    if batch > BATCH_TOLERANCE:
        raise VerificationFailed(f"{source.name}: a batch of {len(images)} differs from single "
                                 f"calls by {batch:.2e} (limit {BATCH_TOLERANCE:g})")
    return differences, batch, len(images)


def build_model(source: ModelSource, repo: Path, origin: Path) -> BuiltModel:
    """Convert, verify against LiteRT and the config, then install model.onnx and its manifest.

    origin: the package file, or the bundle file for a source inside a bundle."""
    spec = load_spec(repo, source.name)
    tflite_model = read_member(origin, source.member)
    model = convert(source, tflite_model)
    check_against_config(model, spec)
    differences, batch, count = verify(source, tflite_model, model, origin)

    target = model_path(repo, source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".onnx.partial")
    onnx.save(model, str(partial))
    partial.replace(target)
    tflite_target = target.with_name(LITERT_MODEL)
    if source.install_tflite:
        # The bytes verified above; the runtime feeds them uint8 pixels scaled as stated here.
        tflite_target.write_bytes(tflite_model)
        target.with_name(LITERT_FEED).write_text(json.dumps({
            "input_range": list(source.input_range),
            "outputs": [o.name for o in source.outputs]}, indent=2) + "\n")
    else:
        tflite_target.unlink(missing_ok=True)
    built = BuiltModel(
        name=source.name,
        input_shape=([source.input_size, 2] if source.points_from
                     else [source.input_size, source.input_size, 3]),
        outputs={o.name: list(o.dims) for o in source.outputs},
        package=source.package.requirement + (f":{source.bundle.member}" if source.bundle
                                                else ""),
        package_sha256=source.origin_sha256,
        member=source.member,
        tflite_sha256=hashlib.sha256(tflite_model).hexdigest(),
        onnx_sha256=sha256_of(target),
        max_abs_diff=max(differences.values()),
        output_diffs=differences,
        batch_diff=batch,
        verification_images=count,
        conversion_version=CONVERSION_VERSION,
        tflite2onnx=version("tflite2onnx"),
        rebuilt=True,
    )
    record = {k: v for k, v in asdict(built).items() if k != "rebuilt"}
    _manifest_path(repo, source.name).write_text(json.dumps(record, indent=2) + "\n")
    return built


def _shape(dims: list[int]) -> str:
    return "x".join(map(str, dims))


def print_table(results: list[BuiltModel]) -> None:
    header = ("model", "status", "input", "outputs", "max|onnx-litert|", "batch diff",
              "onnx sha256")
    rows = [header] + [
        (r.name, "built" if r.rebuilt else "up to date",
         f"{INPUT_NAME} {_shape(r.input_shape)} uint8" if len(r.input_shape) == 3
         else f"points {_shape(r.input_shape)} float32",
         ", ".join(f"{n} {_shape(d)}" for n, d in r.outputs.items()),
         f"{r.max_abs_diff:.1e}", f"{r.batch_diff:.1e}", r.onnx_sha256[:12])
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def build_models(repo: Path, cache: Path | None = None, force: bool = False) -> list[BuiltModel]:
    """Build every model into ``repo`` (model_repository/); a no-op for those up to date.

    Raises ModelBuildError (HashMismatch, FetchFailed, ConversionFailed, VerificationFailed)
    when a step fails; nothing is installed for the model that failed.
    """
    cache = cache or default_cache_dir()
    current = {s.name: None if force else installed(repo, s) for s in MODEL_SOURCES}
    stale = [s for s in MODEL_SOURCES if current[s.name] is None]
    # Every download is checked before anything is converted.
    origins: dict[Package | Bundle, Path] = {}
    for source in stale:
        if source.bundle is not None and source.bundle not in origins:
            origins[source.bundle] = bundle_file(source.bundle, cache)
        elif source.bundle is None and source.package not in origins:
            origins[source.package] = fetch_package(source.package, cache)
    results = []
    for source in MODEL_SOURCES:
        built = current[source.name]
        if built is None:
            print(f"converting {source.name}", flush=True)
            built = build_model(source, repo, origins[source.bundle or source.package])
        else:
            check_against_config(onnx.load(str(model_path(repo, source.name))),
                                 load_spec(repo, source.name))
        results.append(built)
    if not any(r.rebuilt for r in results):
        print("models up to date")
    print_table(results)
    return results


def main(argv: list[str] | None = None) -> int:
    from service.config import REPO_ROOT

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--cache", type=Path, default=None,
                        help="download cache (default: $FACEPOSE_CACHE_DIR or "
                             "~/.cache/facepose/downloads)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        build_models(args.repo, args.cache, args.force)
    except ModelBuildError as error:
        print(f"model build failed: {error}", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
