"""The application core in process: the options model every transport fills, the request flow
(admission, readiness, per-image errors), and the refusals each error becomes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from service import errors
from service.app.admission import DEFAULT_INFLIGHT_MB, MB, Held, inflight_budget_mb
from service.app.core import Core
from service.app.flow import estimate_request
from service.app.images import EncodedImages, ImageOutcome
from service.app.options import Include, RequestOptions, options_model
from service.app.refusals import refusal_for
from service.app.streams import parse_config
from service.clients import GrpcClient, RestClient, grpc_options
from service.config import Settings
from service.gateway import create_gateway
from service.grpc import facepose_pb2 as pb
from service.grpc.decode import INCLUDE_VALUES, OPTION_NAMES
from service.grpc.messages import options_from_proto
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from tests.images import astronaut, encode

SETTINGS = Settings(grpc_port=0, max_images_per_request=4)


# --- Options: declared once, validated alike ----------------------------------------------

def test_options_take_defaults_and_limits_from_the_settings() -> None:
    model = options_model(Settings(default_max_faces=3, max_faces_per_image=5,
                                   default_min_score=0.25))
    options = model()
    assert (options.max_faces, options.min_score, options.min_presence) == (3, 0.25, 0.5)
    assert model(max_faces=5).max_faces == 5
    with pytest.raises(ValueError, match="max_faces"):
        model(max_faces=6)


def test_include_is_split_on_commas_sorted_and_deduplicated() -> None:
    options = options_model(SETTINGS).model_validate(
        {"include": ["mesh,landmarks68", "mesh", " iris "]})
    assert [item.value for item in options.include] == ["iris", "landmarks68", "mesh"]
    assert options.pipeline.iris


@pytest.mark.parametrize("fields", [{"foo": 1}, {"include": ["everything"]}, {"fx": 0},
                                    {"min_score": 1.5}, {"cx": float("nan")},
                                    {"quality": "best"}])
def test_every_transport_refuses_the_same_options(fields: dict[str, Any]) -> None:
    model = options_model(SETTINGS)
    with pytest.raises(ValueError):
        model.model_validate(fields)
    with pytest.raises(errors.BadOption):
        parse_config(SETTINGS, fields)


def test_a_null_option_takes_its_default() -> None:
    setup = parse_config(SETTINGS, {"max_faces": None, "min_score": None, "fx": None})
    assert (setup.options.max_faces, setup.options.min_score) == (16, 0.5)


def test_quality_defaults_to_the_server_setting_everywhere() -> None:
    assert options_model(SETTINGS)().pipeline.quality == "balanced"
    fast_server = Settings(grpc_port=0, default_quality="fast")
    assert options_model(fast_server)().pipeline.quality == "fast"
    assert parse_config(fast_server, {}).options.pipeline.quality == "fast"
    assert parse_config(SETTINGS, {"quality": "accurate"}).options.pipeline.quality == "accurate"
    model = options_model(SETTINGS)
    assert options_from_proto(model, pb.Options(quality="fast")).quality == "fast"


def test_grpc_options_are_validated_by_the_same_model() -> None:
    model = options_model(SETTINGS)
    options = options_from_proto(model, pb.Options(include=[pb.INCLUDE_MESH], max_faces=2))
    assert options.included == {"mesh"} and options.max_faces == 2
    with pytest.raises(errors.BadOption, match="include"):
        options_from_proto(model, pb.Options(include=[99]))
    with pytest.raises(errors.BadOption, match="max_faces"):
        options_from_proto(model, pb.Options(max_faces=0))


def test_every_option_is_in_the_proto_and_every_include_name_too() -> None:
    """The clients and the gRPC adapter read the option names from the proto: one declared in
    RequestOptions alone would be unreachable over gRPC."""
    assert {"include", *OPTION_NAMES} == set(RequestOptions.model_fields)
    assert set(INCLUDE_VALUES) == {item.value for item in Include}
    fields = {"max_faces": 3, "min_score": 0.4, "min_presence": 0.6, "quality": "fast",
              "min_face_px": 64, "max_uncertainty_deg": 20.0, "fx": 800.0, "fy": 810.0,
              "cx": 300.0, "cy": 200.0}
    assert set(fields) == set(OPTION_NAMES)
    options = options_from_proto(options_model(SETTINGS), grpc_options(["iris"], **fields))
    assert options.model_dump(exclude={"include"}) == pytest.approx(fields)
    assert options.pipeline.iris and options.pipeline.min_face_px == 64


def test_the_python_clients_refuse_a_bad_option_before_sending() -> None:
    with GrpcClient("127.0.0.1:9") as rpc, pytest.raises(ValueError, match="include"):
        rpc.estimate([b""], include=["foo"])
    with GrpcClient("127.0.0.1:9") as rpc, pytest.raises(ValueError, match="max_face"):
        rpc.estimate([b""], max_face=3)
    with RestClient("http://127.0.0.1:9") as rest, pytest.raises(ValueError, match="include"):
        rest.faces([b""], include=["landmarks", "foo"])


def test_the_openapi_document_states_what_is_enforced() -> None:
    document = create_gateway(SETTINGS).openapi()
    operation = document["paths"]["/v1/faces"]["post"]
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert (parameters["max_faces"]["minimum"], parameters["max_faces"]["maximum"],
            parameters["max_faces"]["default"]) == (1, 32, 16)
    assert (parameters["min_score"]["minimum"], parameters["min_score"]["maximum"]) == (0, 1)
    include = document["components"]["schemas"]["Include"]
    assert set(include["enum"]) == {"mesh", "landmarks", "landmarks68", "iris", "visibility",
                                    "blendshapes"}
    assert {"422", "429", "500", "503"} <= set(operation["responses"])
    assert "`bad_option`" in operation["responses"]["422"]["description"]
    assert "format" in {p["name"] for p in document["paths"]["/v1/render"]["post"]["parameters"]}


# --- Refusals --------------------------------------------------------------------------------

@pytest.mark.parametrize(("error", "status", "grpc_code", "headers"), [
    (errors.Overloaded("x"), 429, "RESOURCE_EXHAUSTED", {"Retry-After": "5"}),
    (errors.BackendUnavailable("x"), 503, "UNAVAILABLE", {"Retry-After": "5"}),
    (errors.ShuttingDown("x"), 503, "UNAVAILABLE", {"Retry-After": "5"}),
    (errors.Unauthorized("x"), 401, "UNAUTHENTICATED", {"WWW-Authenticate": "Bearer"}),
    (errors.BadOption("x"), 422, "INVALID_ARGUMENT", {}),
    (errors.TooManyImages("x"), 413, "RESOURCE_EXHAUSTED", {}),
    (errors.DeadlineExceeded("x"), 504, "DEADLINE_EXCEEDED", {}),
    (errors.BodyReadTimeout("x"), 408, "DEADLINE_EXCEEDED", {"Connection": "close"}),
    (errors.RequestTooLarge("x"), 413, "RESOURCE_EXHAUSTED", {}),
    (errors.FaceposeError("internal error"), 500, "INTERNAL", {"Connection": "close"}),
])
def test_each_error_is_refused_one_way(error: errors.FaceposeError, status: int,
                                       grpc_code: str, headers: dict[str, str]) -> None:
    refusal = refusal_for(error, retry_after_s=5)
    assert (refusal.status, refusal.grpc_code, refusal.headers) == (status, grpc_code, headers)
    assert refusal.body == {"error": {"code": error.code, "message": "x" if status != 500
                                      else "internal error"}}


# --- The request flow ------------------------------------------------------------------------

class NotReady:
    def __init__(self, runtime: InferenceRuntime) -> None:
        self.specs = runtime.specs

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError("a runtime that is not ready is not called")

    def is_ready(self) -> bool:
        return False

    def close(self) -> None:
        pass


class Borrowed:
    """The module's runtime, which a core stopping must not close."""

    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime, self.specs = runtime, runtime.specs

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runtime.infer(model, inputs)

    def is_ready(self) -> bool:
        return self.runtime.is_ready()

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def runtime() -> Iterator[InferenceRuntime]:
    runtime = create_runtime(SETTINGS)
    yield Borrowed(runtime)
    runtime.close()


def run_flow(runtime: Any, images: EncodedImages, options: RequestOptions | None = None,
             hold: int = 0, settings: Settings = SETTINGS, held_bytes: int = 0
             ) -> list[ImageOutcome]:
    """One request through a started core; ``hold`` requests already admitted, ``held_bytes``
    of the memory budget already held by others. Checks that the request lets go of all it
    held."""
    async def scenario() -> list[ImageOutcome]:
        core = Core(settings)
        await core.start(runtime)
        try:
            async def read(held: Held) -> EncodedImages:
                return images

            core.gate.held += hold
            core.memory.held += held_bytes
            try:
                return await estimate_request(core, "test", options or core.options_model(),
                                              read)
            finally:
                assert core.memory.held == held_bytes
        finally:
            await core.stop()

    return asyncio.run(scenario())


def test_one_bad_image_fails_only_its_own_entry(runtime: InferenceRuntime) -> None:
    face = encode(astronaut())
    first, second = run_flow(runtime, EncodedImages([face, b"not an image"]))
    assert first.result is not None and len(first.result.faces) == 1
    assert (first.width, first.height) == (512, 512)
    assert second.result is None and isinstance(second.error, errors.UnsupportedImage)


def test_a_raw_body_whose_image_is_bad_fails_the_request(runtime: InferenceRuntime) -> None:
    with pytest.raises(errors.CorruptImage):
        run_flow(runtime, EncodedImages([encode(astronaut())[:300]], whole=True))


def test_a_full_gate_refuses_before_decoding(runtime: InferenceRuntime) -> None:
    with pytest.raises(errors.Overloaded, match="capacity"):
        run_flow(runtime, EncodedImages([b"undecoded"]), hold=SETTINGS.max_in_flight_requests)


def test_the_memory_budget_refuses_what_does_not_fit(runtime: InferenceRuntime) -> None:
    # A 1080p frame holds about 25 MB (12 MB a decoded megapixel): with 64 MB of budget, one
    # fits alone, not beside 50 MB held by others; three in one request never fit.
    frame = EncodedImages([encode(np.full((1080, 1920, 3), 90, np.uint8))])
    small = Settings(grpc_port=0, max_inflight_mb=64)
    (outcome,) = run_flow(runtime, frame, settings=small)
    assert outcome.result is not None
    with pytest.raises(errors.Overloaded, match="memory budget"):
        run_flow(runtime, frame, settings=small, held_bytes=50 * MB)
    with pytest.raises(errors.RequestTooLarge):
        run_flow(runtime, EncodedImages(frame.data * 3), settings=small)


@pytest.mark.parametrize(("configured", "limit", "budget"), [
    (None, None, DEFAULT_INFLIGHT_MB), (300, 4096, 300), (None, 1024, 499), (None, 2048, 1318),
    (None, 256, 64)])
def test_the_budget_follows_the_container_limit(configured: int | None, limit: int | None,
                                               budget: int) -> None:
    assert inflight_budget_mb(configured, limit) == budget


def test_an_unready_runtime_refuses_before_reading(runtime: InferenceRuntime) -> None:
    with pytest.raises(errors.BackendUnavailable):
        run_flow(NotReady(runtime), EncodedImages([b"unread"]))


def test_too_many_images_are_refused(runtime: InferenceRuntime) -> None:
    with pytest.raises(errors.TooManyImages):
        run_flow(runtime, EncodedImages([b""] * 5))
