"""The pipeline's optional steps and presets, in process, over the real models: which model
calls each branch makes, with the face-mesh model's presence score overridden to send a face
down it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from service.config import Quality, Settings
from service.pipeline import stages
from service.pipeline.detect import tile_levels
from service.pipeline.estimate import estimate_faces
from service.pipeline.presets import PRESETS
from service.pipeline.records import ImageRequest, PipelineOptions
from service.pipeline.solve import MESH_TRUSTED_PRESENCE, default_camera, euler_pitch_yaw_roll_deg
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from tests.images import astronaut

# Both face-mesh models: V2 fits, V1 searches for lost faces; a branch's mesh passes count
# either.
MESHES = ("face_mesh", "face_mesh_v2")


class CountingRuntime:
    """The real runtime, recording each call's model and batch size; the mesh calls listed in
    ``lose`` (by their order) answer a presence of 0.1, as on a face the model lost."""

    def __init__(self, runtime: InferenceRuntime, lose: set[int] | None = None) -> None:
        self.runtime, self.specs = runtime, runtime.specs
        self.lose = lose or set()
        self.calls: list[tuple[str, int]] = []

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mesh_call = sum(1 for name, _ in self.calls if name in MESHES)
        self.calls.append((model, len(next(iter(inputs.values())))))
        outputs = self.runtime.infer(model, inputs)
        if model in MESHES and mesh_call in self.lose:
            presence = self.specs[model].output("presence").name
            outputs = {**outputs, presence: np.full_like(outputs[presence], -2.2)}  # logit
        return outputs

    def batches(self, model: str) -> list[int]:
        return [size for name, size in self.calls if name == model]

    def mesh_batches(self) -> list[int]:
        return [size for name, size in self.calls if name in MESHES]

    def is_ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def runtime() -> Iterator[InferenceRuntime]:
    runtime = create_runtime(Settings())
    yield runtime
    runtime.close()


def astronaut_request(min_presence: float = 0.5, quality: Quality = Quality.ACCURATE,
                      canvas: int = 512) -> ImageRequest:
    """The astronaut, alone or in the corner of a larger grey canvas."""
    image = np.full((canvas, canvas, 3), 90, np.uint8)
    image[:512, :512] = astronaut()
    return ImageRequest(image, default_camera(canvas, canvas, 40.0),
                        PipelineOptions(max_faces=4, min_score=0.5, min_presence=min_presence,
                                        quality=quality))


def detector_calls(counting: CountingRuntime) -> list[str]:
    return sorted(name for name, _ in counting.calls if name not in MESHES)


def test_a_frontal_face_takes_one_call_per_detector_and_one_mesh_pass(
        runtime: InferenceRuntime) -> None:
    counting = CountingRuntime(runtime)
    (result,) = estimate_faces(counting, [astronaut_request()])
    assert len(result.faces) == 1
    assert counting.mesh_batches() == [1]
    # The whole 512 px image shows faces of 64 px and up, and her 94 px face makes it a
    # portrait: no tiles for the 48 px accurate looks for, and the entry says 64 was searched.
    assert sorted(name for name, _ in counting.calls if name not in MESHES) == [
        "face_detector_full", "face_detector_short"]
    assert result.min_face_px == 64


def test_a_lost_face_is_searched_for_then_fitted_mirrored(runtime: InferenceRuntime) -> None:
    # Lost in every mesh call: the first pass, the search's 12 crops; then the mirrored image is
    # detected again (both detectors) and goes through the same two.
    counting = CountingRuntime(runtime, lose=set(range(100)))
    (result,) = estimate_faces(counting, [astronaut_request(min_presence=0.0)])
    assert counting.mesh_batches() == [1, 12, 1, 12]
    assert [name for name, _ in counting.calls].count("face_detector_short") == 2
    assert result.faces[0].presence < MESH_TRUSTED_PRESENCE
    # Lost everywhere: with the default min_presence the face is not returned.
    counting = CountingRuntime(runtime, lose=set(range(100)))
    assert estimate_faces(counting, [astronaut_request()])[0].faces == []


def test_a_face_lost_only_in_the_original_is_taken_from_the_mirrored_fit(
        runtime: InferenceRuntime) -> None:
    counting = CountingRuntime(runtime, lose={0, 1})
    (result,) = estimate_faces(counting, [astronaut_request()])
    assert counting.mesh_batches() == [1, 12, 1]  # the mirrored fit found it: no search
    (face,) = result.faces
    assert face.presence >= MESH_TRUSTED_PRESENCE
    pitch, yaw, roll = euler_pitch_yaw_roll_deg(face.pose.r_cam_from_model)
    (reference,) = estimate_faces(runtime, [astronaut_request()])[0].faces
    ref_pitch, ref_yaw, ref_roll = euler_pitch_yaw_roll_deg(reference.pose.r_cam_from_model)
    # The mirrored fit of a frontal face agrees with the direct one to a few degrees.
    assert abs(yaw - ref_yaw) < 5 and abs(pitch - ref_pitch) < 5 and abs(roll - ref_roll) < 5


def test_every_preset_locates_fits_and_solves_in_order() -> None:
    assert set(PRESETS) == set(Quality)
    for quality, preset in PRESETS.items():
        assert preset.name == quality.value
        order = [stages.locate, stages.sharpen, stages.fit, stages.refit, stages.search_lost,
                 stages.solve, stages.mirror]
        assert preset.stages[0] is stages.locate
        assert {stages.fit, stages.solve} <= set(preset.stages)
        assert [s for s in order if s in preset.stages] == list(preset.stages)
    # accurate has every stage but the second mesh pass, which with V2 no longer paid.
    assert set(PRESETS[Quality.ACCURATE].stages) == set(order) - {stages.refit}


# Mesh batches for a frontal face, and for a face lost in every mesh call: fast leaves a lost
# face lost (no search, no mirrored fit); balanced searches once with 12 crops, then fits the
# mirrored image once from the landmarks.
ONE_PASS_PRESETS = {Quality.FAST: ([1], [1]), Quality.BALANCED: ([1], [1, 12, 1])}


@pytest.mark.parametrize("quality", sorted(ONE_PASS_PRESETS))
def test_one_pass_presets_take_one_detector_and_one_mesh_pass(runtime: InferenceRuntime,
                                                              quality: Quality) -> None:
    frontal, lost = ONE_PASS_PRESETS[quality]
    counting = CountingRuntime(runtime)
    (result,) = estimate_faces(counting, [astronaut_request(quality=quality)])
    assert result.quality == quality.value and len(result.faces) == 1
    assert counting.mesh_batches() == frontal
    assert detector_calls(counting) == ["face_detector_short"]
    counting = CountingRuntime(runtime, lose=set(range(100)))
    estimate_faces(counting, [astronaut_request(min_presence=0.0, quality=quality)])
    assert counting.mesh_batches() == lost


def test_the_full_range_detector_runs_where_no_face_is_large(runtime: InferenceRuntime) -> None:
    # The face is a tenth of a 1024 canvas: smaller faces may be there too. The whole image
    # shows faces of 128 px and up; tiles the ones down to 48, in the same short-range call.
    counting = CountingRuntime(runtime)
    (result,) = estimate_faces(counting, [astronaut_request(quality=Quality.BALANCED,
                                                            canvas=1024)])
    assert detector_calls(counting) == ["face_detector_full", "face_detector_short"]
    assert counting.batches("face_detector_short") == [1 + len(
        [corner for _, corners in tile_levels(1024, 1024, 128, 48) for corner in corners])]
    assert len(result.faces) == 1 and result.min_face_px == 48


def test_tiles_follow_the_area_and_stop_where_the_whole_image_sees() -> None:
    assert tile_levels(450, 450, 128, 64) == []  # the large dev set's photos: one pass
    small, large = (sum(len(c) for _, c in tile_levels(w, h, 128, 64))
                    for w, h in ((1920, 1080), (4032, 3024)))
    assert 0 < small < large
    sides = [side for side, _ in tile_levels(4032, 3024, 128, 64)]
    assert sides == sorted(sides) and sides[0] == 410


def test_a_preset_gives_the_same_answer_alone_or_beside_another(
        runtime: InferenceRuntime) -> None:
    fast, accurate = (astronaut_request(quality=q) for q in (Quality.FAST, Quality.ACCURATE))
    together = estimate_faces(runtime, [fast, accurate])
    assert [r.quality for r in together] == ["fast", "accurate"]
    for alone, beside in zip((estimate_faces(runtime, [fast])[0],
                              estimate_faces(runtime, [accurate])[0]), together, strict=True):
        np.testing.assert_allclose(alone.faces[0].pose.r_cam_from_model,
                                   beside.faces[0].pose.r_cam_from_model, atol=1e-9)
