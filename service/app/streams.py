"""Video streams, whatever the transport: a stream's settings, its tracker, every frame answered
in order, and the limits each stream is held to (frames in flight, idle time; streams open at
once are the core's ``streams`` gate).

A stream keeps only its own state (the tracker: tracks, ids, filters, clock). Each frame is held
in the memory budget like a request's images and runs as a request of the core's batcher, in
the same groups as still images and other streams' frames, so that concurrent streams share
model calls.

The WebSocket (``service/http/websocket.py``) and gRPC (``service/grpc/track_stream.py``)
transports only turn their messages into ``Incoming`` items and the ``Outgoing`` ones back into
messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from service.app.admission import BYTES_PER_DECODED_MEGAPIXEL, Held, MemoryBudget
from service.app.images import (
    DecodePlan,
    EncodedImages,
    decode_request_images,
    decoded_megapixels,
    plan_decodes,
)
from service.app.options import RequestOptions, options_model, validate_options
from service.app.results import FaceOutput, face_output
from service.config import Settings
from service.errors import (
    BadOption,
    BadRequestBody,
    FaceposeError,
    Overloaded,
    ProtocolError,
    RequestTooLarge,
    StreamIdle,
)
from service.logs import LOGGER
from service.metrics import STREAM_DETECTOR_RUNS, STREAM_FRAMES
from service.pipeline.estimate import estimate_faces
from service.pipeline.records import ImageRequest, ImageResult
from service.pipeline.smoothing import DEFAULT_SMOOTHING, OneEuroParams, SmoothingParams
from service.pipeline.solve import Camera
from service.pipeline.tracker import Tracker, TrackerSettings
from service.runtime.base import InferenceRuntime

MAX_DETECT_EVERY = 10_000
MAX_FRAME_ID_CHARS = 256
# Client timestamps beyond this (about 30,000 years of milliseconds) are no clock's.
MAX_TIMESTAMP_MS = 1e15
FrameId = str | int | None


# --- What a client may set per stream ---------------------------------------------------------

class OneEuroIn(BaseModel):
    """One Euro filter parameters; any left out keep the service's default for that part."""

    model_config = ConfigDict(extra="forbid")
    min_cutoff_hz: float | None = Field(
        default=None, gt=0, le=1000,
        description="Cutoff of a still signal, Hz: lower is steadier and lags more.")
    beta: float | None = Field(
        default=None, ge=0, le=1e6,
        description="Cutoff added per unit of speed (per rad/s, mm/s or px/s): higher follows "
                    "fast motion more closely.")
    d_cutoff_hz: float | None = Field(default=None, gt=0, le=1000,
                                      description="Cutoff of the speed estimate, Hz.")

    def over(self, default: OneEuroParams) -> OneEuroParams:
        return OneEuroParams(
            default.min_cutoff_hz if self.min_cutoff_hz is None else self.min_cutoff_hz,
            default.beta if self.beta is None else self.beta,
            default.d_cutoff_hz if self.d_cutoff_hz is None else self.d_cutoff_hz)


class SmoothingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(default=True, description="false: poses and landmarks as fitted.")
    rotation: OneEuroIn = Field(default_factory=OneEuroIn,
                                description="On the rotation; speed in rad/s.")
    translation: OneEuroIn = Field(default_factory=OneEuroIn,
                                   description="On each translation coordinate; speed in mm/s.")
    landmarks: OneEuroIn = Field(default_factory=OneEuroIn,
                                 description="On each landmark coordinate; speed in px/s.")


class StreamConfig(RequestOptions):
    """A stream's settings (the `config` message): the request options, for the faces tracked
    (``min_score`` starts a track, a face-presence score below ``min_presence`` loses it), and
    the tracker's; every field is optional."""

    detect_every: int | None = Field(
        default=None, ge=1, le=MAX_DETECT_EVERY,
        description="Run the detector every this many frames to find new faces.")
    fps: float = Field(default=30.0, gt=0, le=1000,
                       description="Frame rate assumed for frames sent without timestamp_ms.")
    smoothing: SmoothingIn = Field(default_factory=SmoothingIn)


def stream_config_model(settings: Settings) -> type[StreamConfig]:
    """StreamConfig with the defaults and limits of ``settings``."""
    model = options_model(settings, "StreamConfig", base=StreamConfig)
    assert issubclass(model, StreamConfig)
    return model


@dataclass(frozen=True)
class StreamSetup:
    options: StreamConfig  # as the client sent it
    tracker: TrackerSettings
    fps: float
    effective: StreamConfig  # every setting in force, defaults filled in: the client is told


def parse_config(settings: Settings, data: Any,
                 model: type[StreamConfig] | None = None) -> StreamSetup:
    """A client's config (JSON-like, or a StreamConfig a transport validated) -> the stream's
    setup; raises BadOption.

    model: ``stream_config_model(settings)``, made once by the caller that has many streams.
    """
    if isinstance(data, StreamConfig):
        config = data
    else:
        if data is not None and not isinstance(data, dict):
            raise BadOption("config: must be an object")
        validated = validate_options(model or stream_config_model(settings), data or {},
                                     prefix="config: ")
        assert isinstance(validated, StreamConfig)
        config = validated
    if config.min_presence <= 0:
        raise BadOption("min_presence must be above 0 in a stream: a track whose "
                        "face-presence score falls below it is lost")
    smoothing = SmoothingParams(
        rotation=config.smoothing.rotation.over(DEFAULT_SMOOTHING.rotation),
        translation=config.smoothing.translation.over(DEFAULT_SMOOTHING.translation),
        landmarks=config.smoothing.landmarks.over(DEFAULT_SMOOTHING.landmarks))
    detect_every = config.detect_every or settings.stream_detect_every
    tracker = TrackerSettings(config.pipeline, detect_every,
                              smoothing if config.smoothing.enabled else None)
    effective = config.model_copy(update={
        "min_face_px": config.min_face_px_searched, "detect_every": detect_every,
        "smoothing": SmoothingIn(enabled=config.smoothing.enabled, **{
            part: OneEuroIn(**asdict(getattr(smoothing, part)))
            for part in ("rotation", "translation", "landmarks")})})
    return StreamSetup(config, tracker, config.fps, effective)


# --- One stream's frames ----------------------------------------------------------------------

@dataclass
class FrameIn:
    data: bytes
    timestamp_ms: float | None = None
    frame_id: FrameId = None
    error: FaceposeError | None = None  # a frame the transport could not read: answered so
    plans: list[DecodePlan | FaceposeError] | None = None  # its header read, once held


@dataclass
class ConfigIn:
    config: Any  # JSON-like data, or a StreamConfig the transport validated


@dataclass
class EndIn:
    """The client has no more frames: answer those sent, then end."""


Incoming = FrameIn | ConfigIn | EndIn


@dataclass
class ConfigAck:
    config: StreamConfig  # every setting in force


@dataclass
class FrameOutcome:
    """The answer to one frame: its faces, each with its track id, or its error."""

    frame_id: FrameId
    frame: int  # position in the stream, from 0
    timestamp_ms: float | None = None
    width: int | None = None
    height: int | None = None
    camera: Camera | None = None
    detected: bool = False
    faces: list[tuple[int, FaceOutput]] = field(default_factory=list)  # (track id, face)
    error: FaceposeError | None = None


@dataclass
class FrameDone:
    outcome: FrameOutcome


@dataclass
class StreamEnd:
    frames: int


Outgoing = ConfigAck | FrameDone | StreamEnd


class FrameEngine(Protocol):
    """What a stream's frames run on: the core's request batcher, whose groups hold still images
    and other streams' frames too, or ``InThread`` in process."""

    def coming(self) -> AbstractContextManager[None]: ...

    async def submit(self, requests: list[ImageRequest]) -> list[ImageResult]: ...


class InThread:
    """A ``FrameEngine`` without a batcher: each frame's request run on its own in a worker
    thread (tools and tests in process)."""

    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime = runtime

    def coming(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    async def submit(self, requests: list[ImageRequest]) -> list[ImageResult]:
        return await asyncio.to_thread(estimate_faces, self.runtime, requests)


class StreamSession:
    """A stream's tracker and clock; ``process`` answers one frame at a time, in order."""

    def __init__(self, settings: Settings, setup: StreamSetup, transport: str) -> None:
        self.settings = settings
        self.setup = setup
        self.transport = transport
        self.tracker = Tracker(setup.tracker)
        self.frames = 0
        self._last_timestamp_ms: float | None = None

    def _timestamp_ms(self, given: float | None) -> float:
        last = self._last_timestamp_ms
        if given is None:
            return 0.0 if last is None else last + 1000.0 / self.setup.fps
        if not math.isfinite(given) or abs(given) > MAX_TIMESTAMP_MS:
            raise BadRequestBody(f"timestamp_ms must be a finite number of milliseconds up to "
                                 f"{MAX_TIMESTAMP_MS:g}")
        if last is not None and given <= last:
            raise BadRequestBody(f"timestamp_ms must increase from frame to frame: {given:g} "
                                 f"after {last:g}")
        return given

    async def process(self, frame: FrameIn, engine: FrameEngine) -> FrameOutcome:
        """The frame decoded in a worker thread, then a request of ``engine`` like any image's,
        its faces following the tracker's."""
        outcome = FrameOutcome(frame.frame_id, self.frames)
        self.frames += 1
        try:
            if frame.error is not None:
                raise frame.error
            timestamp_ms = self._timestamp_ms(frame.timestamp_ms)
            outcome.timestamp_ms = timestamp_ms
            with engine.coming():
                # Full size: tracking crops from the last frame's landmarks, in its pixels.
                (decoded,) = await asyncio.to_thread(
                    decode_request_images, self.settings, EncodedImages([frame.data], whole=True),
                    self.setup.options, False, frame.plans)
                assert decoded.request is not None
                request = self.tracker.begin(decoded.request.image, decoded.request.camera,
                                             timestamp_ms / 1000.0)
                (answer,) = await engine.submit([request])
            result = self.tracker.end(answer)
        except FaceposeError as exc:
            STREAM_FRAMES.labels(self.transport, "error").inc()
            outcome.error = exc
            return outcome
        except Exception:
            LOGGER.exception("a stream frame failed")
            # Whatever state the tracker was left in is not to be trusted: start afresh.
            self.tracker.reset()
            STREAM_FRAMES.labels(self.transport, "error").inc()
            outcome.error = FaceposeError("internal error")
            return outcome
        self._last_timestamp_ms = timestamp_ms
        if result.detect_reason is not None:
            STREAM_DETECTOR_RUNS.labels(result.detect_reason).inc()
        STREAM_FRAMES.labels(self.transport, "tracked" if result.detect_reason is None
                             else "detected").inc()
        include = self.setup.options.included
        outcome.width, outcome.height = decoded.width, decoded.height
        outcome.camera = result.camera
        outcome.detected = result.detect_reason is not None
        outcome.faces = [(tracked.track_id, face_output(tracked.face, include))
                         for tracked in result.faces]
        return outcome


class StreamRunner:
    """Drives one stream: reads the client's messages, answers each frame in order.

    At most ``stream_max_frames_in_flight`` frames are read and not yet answered: past that the
    next message is not read, so a fast client waits instead of filling the server's memory.
    Each frame read holds what it will cost in the memory budget until it is answered; one that
    finds no room is answered with that error (``overloaded``) and the stream goes on.
    A stream that sends nothing for ``stream_idle_timeout_s`` ends with ``StreamIdle``.
    ``run`` raises ProtocolError or BadOption (a bad config) for the transport to report, and
    whatever the transport's receive and send raise (a client gone).
    """

    def __init__(self, settings: Settings, engine: FrameEngine, memory: MemoryBudget,
                 transport: str, config_model: type[StreamConfig] | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.memory = memory
        self.transport = transport
        self.config_model = config_model or stream_config_model(settings)
        self.session: StreamSession | None = None
        self._in_flight = asyncio.Semaphore(settings.stream_max_frames_in_flight)
        # A frame with the bytes it holds in the memory budget.
        self._pending: asyncio.Queue[ConfigAck | tuple[FrameIn, int] | FaceposeError | None] = (
            asyncio.Queue())

    async def run(self, receive: Callable[[], Awaitable[Incoming | None]],
                  send: Callable[[Outgoing], Awaitable[None]]) -> None:
        """receive: the next message, None when the client closed its side."""
        with self.memory.hold(self.transport) as held:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._read(receive, held))
                    group.create_task(self._answer(send, held))
            except BaseExceptionGroup as failed:
                # The first failure says how the stream ends; the other task was only cancelled.
                raise failed.exceptions[0] from None

    def _start(self, config: Any) -> StreamSetup:
        setup = parse_config(self.settings, config, self.config_model)
        self.session = StreamSession(self.settings, setup, self.transport)
        return setup

    def _hold_frame(self, frame: FrameIn, held: Held) -> tuple[FrameIn, int]:
        """The frame with what it holds; a frame the budget has no room for becomes its
        error, and its bytes are dropped at once."""
        if frame.error is not None:
            return frame, 0
        assert self.session is not None
        plans = plan_decodes(self.settings, EncodedImages([frame.data], whole=True),
                             self.session.setup.options, reduce=False)
        cost = len(frame.data) + round(BYTES_PER_DECODED_MEGAPIXEL * decoded_megapixels(plans))
        try:
            held.add(cost)
        except (Overloaded, RequestTooLarge) as exc:
            return FrameIn(b"", frame.timestamp_ms, frame.frame_id, error=exc), 0
        return replace(frame, plans=plans), cost

    async def _read(self, receive: Callable[[], Awaitable[Incoming | None]],
                    held: Held) -> None:
        try:
            await self._read_messages(receive, held)
        except (ProtocolError, BadOption, StreamIdle) as exc:
            # Queued behind the frames already read: those are answered before the stream ends.
            await self._pending.put(exc)

    async def _read_messages(self, receive: Callable[[], Awaitable[Incoming | None]],
                             held: Held) -> None:
        idle_s = self.settings.stream_idle_timeout_s
        while True:
            await self._in_flight.acquire()
            try:
                async with asyncio.timeout(idle_s):
                    message = await receive()
            except TimeoutError:
                raise StreamIdle(f"no message for {idle_s:g} s: the stream is closed") from None
            if message is None or isinstance(message, EndIn):
                await self._pending.put(None)
                return
            if isinstance(message, ConfigIn):
                if self.session is not None:
                    raise ProtocolError("config may come once, before the first frame")
                setup = self._start(message.config)
                await self._pending.put(ConfigAck(setup.effective))
                continue
            if self.session is None:
                self._start(None)
            await self._pending.put(self._hold_frame(message, held))

    async def _answer(self, send: Callable[[Outgoing], Awaitable[None]], held: Held) -> None:
        while (item := await self._pending.get()) is not None:
            if isinstance(item, FaceposeError):
                raise item
            if isinstance(item, ConfigAck):
                await self._send(send, item)
            else:
                frame, cost = item
                outcome = await self._process(frame)
                held.release(cost)
                await self._send(send, FrameDone(outcome))
            self._in_flight.release()
        await self._send(send, StreamEnd(self.session.frames if self.session is not None else 0))

    async def _process(self, frame: FrameIn) -> FrameOutcome:
        """The frame's answer. Cancelled (the client gone), it still waits for the frame's
        work: model calls cannot be interrupted, and the stream's slot is given back only once
        they are done, so that what runs stays within the limits."""
        assert self.session is not None
        work = asyncio.ensure_future(self.session.process(frame, self.engine))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await work
            raise

    async def _send(self, send: Callable[[Outgoing], Awaitable[None]],
                    outgoing: Outgoing) -> None:
        """Send within the idle timeout: a client that stops reading must not hold its slot
        and its frames forever."""
        idle_s = self.settings.stream_idle_timeout_s
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the send completes, and a cancelled stream would then never end.
        try:
            async with asyncio.timeout(idle_s):
                await send(outgoing)
        except TimeoutError:
            raise StreamIdle(f"the client read nothing for {idle_s:g} s: the stream is "
                             "closed") from None
