"""Tracking and smoothing on a synthetic video of a real face, with the real models."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from service.config import Settings
from service.pipeline.records import PipelineOptions
from service.pipeline.smoothing import (
    DEFAULT_SMOOTHING,
    OneEuroFilter,
    OneEuroParams,
    RotationOneEuroFilter,
    SmoothingParams,
)
from service.pipeline.solve import (
    default_camera,
    euler_pitch_yaw_roll_deg,
    quaternion_wxyz,
    rotation_from_euler_deg,
)
from service.pipeline.tracker import FrameResult, Tracker, TrackerSettings, track_frame
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from tests.video import Video, synthetic_video

pytestmark = pytest.mark.slow
DETECTOR = "face_detector_short"
OPTIONS = PipelineOptions(max_faces=4, min_score=0.5, min_presence=0.5)


class CountingRuntime:
    """The real runtime, counting its calls per model."""

    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime = runtime
        self.specs = runtime.specs
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls[model] += 1
        return self.runtime.infer(model, inputs)

    def is_ready(self) -> bool:
        return self.runtime.is_ready()

    def close(self) -> None:
        self.runtime.close()


@pytest.fixture(scope="module")
def runtime() -> Iterator[CountingRuntime]:
    counting = CountingRuntime(create_runtime(Settings()))
    yield counting
    counting.close()


@pytest.fixture(scope="module")
def video() -> Video:
    return synthetic_video(frames=90)


def decoded(video: Video) -> list[np.ndarray]:
    """The frames as the service sees them: decoded from their JPEGs."""
    return [cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
                         cv2.COLOR_BGR2RGB) for data in video.encoded]


@dataclass
class Run:
    results: list[FrameResult]
    detector_frames: list[int]  # the frames on which the detector ran (once or more)

    def series(self) -> tuple[np.ndarray, np.ndarray]:
        """Roll (F,) degrees and translation (F, 3) mm of the one face of every frame."""
        poses = [result.faces[0].face.pose for result in self.results]
        roll = np.array([euler_pitch_yaw_roll_deg(p.r_cam_from_model)[2] for p in poses])
        return roll, np.array([p.t_cam_from_model_mm for p in poses])


def track(runtime: CountingRuntime, video: Video, smoothing: SmoothingParams | None,
          detect_every: int = 10) -> Run:
    frames = decoded(video)
    height, width = frames[0].shape[:2]
    camera = default_camera(width, height, 40.0)
    tracker = Tracker(TrackerSettings(OPTIONS, detect_every, smoothing))
    results, detector_frames = [], []
    for index, (frame, ms) in enumerate(zip(frames, video.timestamps_ms, strict=True)):
        before = runtime.calls[DETECTOR]
        results.append(track_frame(runtime, tracker, frame, camera, ms / 1000.0))
        if runtime.calls[DETECTOR] > before:
            detector_frames.append(index)
    return Run(results, detector_frames)


def jitter(series: np.ndarray) -> np.ndarray:
    """RMS of second differences: on a smooth path they are near 0, so this is the noise."""
    return np.sqrt(np.mean(np.diff(series, 2, axis=0) ** 2, axis=0))


def path_error_deg(roll: np.ndarray, video: Video) -> np.ndarray:
    """Recovered roll against the in-plane turn applied, less the face's own constant roll."""
    error = roll - video.roll_deg
    return error - error.mean()


@pytest.fixture(scope="module")
def raw(runtime: CountingRuntime, video: Video) -> Run:
    return track(runtime, video, None)


@pytest.fixture(scope="module")
def smoothed(runtime: CountingRuntime, video: Video) -> Run:
    return track(runtime, video, DEFAULT_SMOOTHING)


def test_one_track_id_throughout(smoothed: Run) -> None:
    ids = [[tracked.track_id for tracked in result.faces] for result in smoothed.results]
    assert ids == [[1]] * len(smoothed.results)


def test_detector_runs_on_first_frame_and_every_n_frames(smoothed: Run) -> None:
    frames = len(smoothed.results)
    reasons = [result.detect_reason for result in smoothed.results]
    assert reasons[0] == "first"
    assert [i for i, reason in enumerate(reasons) if reason] == list(range(0, frames, 10))
    # Counted on the runtime itself: every detector call of the pipeline goes through it (a
    # detection frame where the face is not a sure portrait calls it twice: the whole frame,
    # then the tiles of the small-face search, as for a photo).
    assert smoothed.detector_frames == list(range(0, frames, 10))


def test_smoothing_lowers_jitter_and_roll_follows_the_path(raw: Run, smoothed: Run,
                                                           video: Video) -> None:
    raw_roll, raw_translation = raw.series()
    roll, translation = smoothed.series()
    print(f"roll jitter {jitter(raw_roll):.3f} -> {jitter(roll):.3f} deg; translation jitter "
          f"{np.round(jitter(raw_translation), 3)} -> {np.round(jitter(translation), 3)} mm; "
          f"roll path error max {np.abs(path_error_deg(raw_roll, video)).max():.2f} -> "
          f"{np.abs(path_error_deg(roll, video)).max():.2f} deg")
    assert jitter(roll) < 0.6 * jitter(raw_roll)
    # Each axis steadier, or already steady: FaceMesh V2's x jitters 0.36 mm as fitted.
    assert ((jitter(translation) < 0.8 * jitter(raw_translation))
            | (jitter(translation) < 0.5)).all()
    assert np.linalg.norm(jitter(translation)) < 0.6 * np.linalg.norm(jitter(raw_translation))
    # The path turns by 40 degrees peak to peak at up to 42 degrees a second.
    assert np.ptp(video.roll_deg) > 39
    assert np.abs(path_error_deg(raw_roll, video)).max() < 2.5
    assert np.abs(path_error_deg(roll, video)).max() < 3.0


def test_translation_follows_the_motion(smoothed: Run, video: Video) -> None:
    _, translation = smoothed.series()
    # Image motion of the face centre becomes lateral motion at the face's depth.
    camera = smoothed.results[0].camera
    lateral = video.shift_px * translation[:, 2:3] / camera.fx
    error = translation[:, :2] - lateral
    error -= error.mean(axis=0)
    assert np.abs(error).max() < 10.0  # mm, on a path 120 mm wide
    # Scaled up, the face comes nearer.
    assert np.corrcoef(translation[:, 2], 1 / video.scale)[0, 1] > 0.95


def test_a_face_coming_into_view_is_picked_up_and_ids_persist(runtime: CountingRuntime,
                                                              video: Video) -> None:
    """A second face appears at frame 12; the periodic detection finds it by frame 20."""
    frames = decoded(video)[:30]
    visitor = cv2.resize(frames[0][150:350, 230:430], (140, 140))
    camera = default_camera(640, 480, 40.0)
    tracker = Tracker(TrackerSettings(OPTIONS, 8, DEFAULT_SMOOTHING))
    ids = []
    for k, frame in enumerate(frames):
        if k >= 12:
            frame = frame.copy()
            frame[10:150, 10:150] = visitor
        result = track_frame(runtime, tracker, frame, camera, k / 30)
        ids.append(sorted(t.track_id for t in result.faces))
    assert ids[:12] == [[1]] * 12
    assert ids[16:] == [[1, 2]] * (len(frames) - 16)


def test_a_face_that_leaves_ends_its_track_and_returns_with_a_new_id(
        runtime: CountingRuntime, video: Video) -> None:
    frames = decoded(video)[:20]
    blank = np.full_like(frames[0], 90)
    camera = default_camera(640, 480, 40.0)
    tracker = Tracker(TrackerSettings(OPTIONS, 10, None))
    sequence = frames[:8] + [blank] * 3 + frames[11:]
    results = [track_frame(runtime, tracker, frame, camera, k / 30)
               for k, frame in enumerate(sequence)]
    ids = [[t.track_id for t in r.faces] for r in results]
    assert ids == [[1]] * 8 + [[]] * 3 + [[2]] * 9
    reasons = [r.detect_reason for r in results]
    assert reasons[8] == "lost" and reasons[9:12] == ["none_tracked"] * 3
    assert all(reason is None for reason in reasons[12:])


def test_another_frame_size_starts_afresh(runtime: CountingRuntime, video: Video) -> None:
    frames = decoded(video)[:3]
    tracker = Tracker(TrackerSettings(OPTIONS, 10, None))
    track_frame(runtime, tracker, frames[0], default_camera(640, 480, 40.0), 0.0)
    smaller = cv2.resize(frames[1], (480, 360))
    result = track_frame(runtime, tracker, smaller, default_camera(480, 360, 40.0), 0.033)
    assert result.detect_reason == "none_tracked"
    assert [t.track_id for t in result.faces] == [2]


# --- The filters on their own ---------------------------------------------------------------

def test_one_euro_smooths_noise_at_rest_and_follows_motion() -> None:
    rng = np.random.default_rng(1)
    params = OneEuroParams(min_cutoff_hz=1.0, beta=0.05)
    times = np.arange(120) / 30
    still = 100 + rng.normal(0, 1.0, (120, 2))
    ramp = np.stack([300 * times, np.zeros(120)], 1) + rng.normal(0, 1.0, (120, 2))
    at_rest, moving = OneEuroFilter(params), OneEuroFilter(params)
    rest = np.array([at_rest(t, x) for t, x in zip(times, still, strict=True)])
    motion = np.array([moving(t, x) for t, x in zip(times, ramp, strict=True)])
    assert jitter(rest[30:]).max() < 0.2 * jitter(still[30:]).max()
    # At 300 px/s a plain 1 Hz low-pass would trail by 48 px; the speed raises the cutoff.
    assert np.abs(motion[60:, 0] - 300 * times[60:]).mean() < 8.0
    slow = OneEuroFilter(OneEuroParams(min_cutoff_hz=1.0, beta=0.0))
    lagging = np.array([slow(t, x) for t, x in zip(times, ramp, strict=True)])
    assert np.abs(lagging[60:, 0] - 300 * times[60:]).mean() > 30.0


def test_rotation_filter_is_continuous_through_the_quaternion_sign_flip() -> None:
    """A turn about the optical axis through 180 degrees: the w >= 0 quaternion of the raw
    rotations flips sign there; the filtered rotation must turn on smoothly."""
    times = np.arange(40) / 30
    angles = 170 + 20 * np.arange(40) / 39
    rotations = [rotation_from_euler_deg(0.0, 0.0, a) for a in angles]
    quaternions = np.array([quaternion_wxyz(r) for r in rotations])
    assert (np.abs(np.diff(quaternions, axis=0)).max(axis=1) > 1.0).any()
    smoother = RotationOneEuroFilter(DEFAULT_SMOOTHING.rotation)
    filtered = [smoother(t, r) for t, r in zip(times, rotations, strict=True)]
    steps = [np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1)))
             for a, b in itertools.pairwise(filtered)]
    assert max(steps) < 1.0  # the raw rotation turns 0.51 degrees a frame
    assert all(np.allclose(r.T @ r, np.eye(3), atol=1e-9) for r in filtered)
    final_roll = euler_pitch_yaw_roll_deg(filtered[-1])[2] % 360
    assert 186 < final_roll < 190


def test_filters_repeat_their_value_for_a_repeated_time() -> None:
    translation = OneEuroFilter(DEFAULT_SMOOTHING.translation)
    translation(0.0, np.array([0.0, 0.0, 500.0]))
    first = translation(0.1, np.array([10.0, 0.0, 500.0]))
    np.testing.assert_array_equal(translation(0.1, np.array([99.0, 0.0, 0.0])), first)
