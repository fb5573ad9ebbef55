"""Video streams, whatever the transport: a stream's settings, its tracker, every frame answered
in order, and the limits each stream is held to (streams open, frames in flight, idle time).

The WebSocket (``service/api/stream.py``) and gRPC (``service/grpc/track.py``) transports only
turn their messages into ``Incoming`` items and the ``Outgoing`` ones back into messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.api.options import RequestOptions, parse_options
from service.api.schemas import CameraOut, ErrorDetail, FaceOut
from service.api.serialize import error_dict, image_dict
from service.config import Settings
from service.errors import BadOption, BadRequestBody, FaceposeError, Overloaded
from service.estimate import decode_images
from service.logs import LOGGER
from service.metrics import STREAM_DETECTOR_RUNS, STREAM_FRAMES, STREAMS_OPEN, STREAMS_REJECTED
from service.pipeline.pipeline import ImageResult
from service.pipeline.smoothing import DEFAULT_SMOOTHING, OneEuroParams, SmoothingParams
from service.pipeline.track import Tracker, TrackerSettings
from service.runtime.base import InferenceRuntime

MAX_DETECT_EVERY = 10_000
MAX_FRAME_ID_CHARS = 256
# Client timestamps beyond this (about 30,000 years of milliseconds) are no clock's.
MAX_TIMESTAMP_MS = 1e15
FrameId = str | int | None


class ProtocolError(BadRequestBody):
    """The client broke the stream protocol (not a bad frame): the stream ends."""


class StreamIdle(FaceposeError):
    code = "idle_timeout"
    status = 408


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


class StreamConfig(BaseModel):
    """A stream's settings (the `config` message); every field is optional."""

    model_config = ConfigDict(extra="forbid")
    include: list[str] = Field(default_factory=list,
                               description="As in /v1/faces: mesh, landmarks, landmarks68, iris, "
                                           "visibility.")
    max_faces: int | None = Field(default=None, description="Faces tracked at most.")
    min_score: float | None = Field(default=None, description="Detector score to start a track.")
    min_presence: float | None = Field(
        default=None, description="Face-presence score below which a track is lost (above 0).")
    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None
    detect_every: int | None = Field(
        default=None, ge=1, le=MAX_DETECT_EVERY,
        description="Run the detector every this many frames to find new faces.")
    fps: float = Field(default=30.0, gt=0, le=1000,
                       description="Frame rate assumed for frames sent without timestamp_ms.")
    smoothing: SmoothingIn = Field(default_factory=SmoothingIn)


class TrackedFaceOut(FaceOut):
    track_id: int = Field(description="The same for a face in every frame while it is in view.")


class StreamFrameOut(BaseModel):
    """The answer to one frame (the `frame` message the service sends)."""

    type: Literal["frame"] = "frame"
    id: str | int | None = Field(description="The client's frame id, echoed.")
    frame: int = Field(description="Position of the frame in the stream, from 0.")
    timestamp_ms: float | None = Field(description="The frame's time: the client's, or "
                                                   "derived from fps.")
    width: int | None
    height: int | None
    camera: CameraOut | None
    detected: bool = Field(description="Whether the face detector ran on this frame.")
    faces: list[TrackedFaceOut]
    error: ErrorDetail | None = Field(description="Set when this frame failed; the stream goes "
                                                  "on.")


@dataclass(frozen=True)
class StreamSetup:
    options: RequestOptions
    tracker: TrackerSettings
    fps: float
    effective: dict[str, Any]  # the settings in force, as the client is told them


def problems_of(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                     for e in error.errors())


def parse_config(settings: Settings, data: Any) -> StreamSetup:
    """A client's config object (JSON-like) -> the stream's setup; raises BadOption."""
    try:
        config = StreamConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise BadOption(f"config: {problems_of(exc)}") from None
    options = parse_options(settings, include=config.include, max_faces=config.max_faces,
                            min_score=config.min_score, min_presence=config.min_presence,
                            fx=config.fx, fy=config.fy, cx=config.cx, cy=config.cy)
    if options.pipeline.min_presence <= 0:
        raise BadOption("min_presence must be above 0 in a stream: a track whose "
                        "face-presence score falls below it is lost")
    smoothing = SmoothingParams(
        rotation=config.smoothing.rotation.over(DEFAULT_SMOOTHING.rotation),
        translation=config.smoothing.translation.over(DEFAULT_SMOOTHING.translation),
        landmarks=config.smoothing.landmarks.over(DEFAULT_SMOOTHING.landmarks))
    detect_every = config.detect_every or settings.stream_detect_every
    tracker = TrackerSettings(options.pipeline, detect_every,
                              smoothing if config.smoothing.enabled else None)
    fx, fy, cx, cy = options.intrinsics
    effective = {
        "include": sorted(options.include), "max_faces": options.pipeline.max_faces,
        "min_score": options.pipeline.min_score, "min_presence": options.pipeline.min_presence,
        "fx": fx, "fy": fy, "cx": cx, "cy": cy, "detect_every": detect_every,
        "fps": config.fps,
        "smoothing": {"enabled": config.smoothing.enabled,
                      **{part: asdict(getattr(smoothing, part))
                         for part in ("rotation", "translation", "landmarks")}},
    }
    return StreamSetup(options, tracker, config.fps, effective)


# --- One stream's frames ----------------------------------------------------------------------

@dataclass
class FrameIn:
    data: bytes
    timestamp_ms: float | None = None
    frame_id: FrameId = None
    error: FaceposeError | None = None  # a frame the transport could not read: answered so


@dataclass
class ConfigIn:
    config: Any  # the client's config object, as JSON-like data


@dataclass
class EndIn:
    """The client has no more frames: answer those sent, then end."""


Incoming = FrameIn | ConfigIn | EndIn


@dataclass
class ConfigAck:
    config: dict[str, Any]


@dataclass
class FrameDone:
    body: dict[str, Any]  # ``StreamFrameOut`` without its type


@dataclass
class StreamEnd:
    frames: int


Outgoing = ConfigAck | FrameDone | StreamEnd


class StreamSession:
    """A stream's tracker and clock. ``process`` runs in a worker thread, one frame at a time."""

    def __init__(self, settings: Settings, runtime: InferenceRuntime, setup: StreamSetup,
                 transport: str) -> None:
        self.settings = settings
        self.setup = setup
        self.transport = transport
        self.tracker = Tracker(runtime, setup.tracker)
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

    def process(self, frame: FrameIn) -> dict[str, Any]:
        index = self.frames
        self.frames += 1
        body: dict[str, Any] = {"id": frame.frame_id, "frame": index, "timestamp_ms": None,
                                "width": None, "height": None, "camera": None,
                                "detected": False, "faces": [], "error": None}
        try:
            if frame.error is not None:
                raise frame.error
            timestamp_ms = self._timestamp_ms(frame.timestamp_ms)
            body["timestamp_ms"] = timestamp_ms
            # Full size: tracking crops from the last frame's landmarks, in its pixels.
            entries, (request,) = decode_images(self.settings, [frame.data],
                                                self.setup.options, fail_whole=True,
                                                reduce=False)
            result = self.tracker.step(request.image, request.camera, timestamp_ms / 1000.0)
        except FaceposeError as exc:
            STREAM_FRAMES.labels(self.transport, "error").inc()
            body["error"] = error_dict(exc.code, exc.message)
            return body
        except Exception:
            LOGGER.exception("a stream frame failed")
            # Whatever state the tracker was left in is not to be trusted: start afresh.
            self.tracker.reset()
            STREAM_FRAMES.labels(self.transport, "error").inc()
            body["error"] = error_dict("internal_error", "internal error")
            return body
        self._last_timestamp_ms = timestamp_ms
        if result.detect_reason is not None:
            STREAM_DETECTOR_RUNS.labels(result.detect_reason).inc()
        STREAM_FRAMES.labels(self.transport, "tracked" if result.detect_reason is None
                             else "detected").inc()
        (entry,) = entries
        image = image_dict(index, entry["width"], entry["height"],
                           ImageResult(result.camera, [t.face for t in result.faces]),
                           self.setup.options.include)
        body.update(width=image["width"], height=image["height"], camera=image["camera"],
                    detected=result.detect_reason is not None,
                    faces=[{"track_id": tracked.track_id, **face}
                           for tracked, face in zip(result.faces, image["faces"], strict=True)])
        return body


class StreamRunner:
    """Drives one stream: reads the client's messages, answers each frame in order.

    At most ``stream_max_frames_in_flight`` frames are read and not yet answered: past that the
    next message is not read, so a fast client waits instead of filling the server's memory.
    A stream that sends nothing for ``stream_idle_timeout_s`` ends with ``StreamIdle``.
    ``run`` raises ProtocolError or BadOption (a bad config) for the transport to report, and
    whatever the transport's receive and send raise (a client gone).
    """

    def __init__(self, settings: Settings, runtime: InferenceRuntime, transport: str) -> None:
        self.settings = settings
        self.runtime = runtime
        self.transport = transport
        self.session: StreamSession | None = None
        self._in_flight = asyncio.Semaphore(settings.stream_max_frames_in_flight)
        self._pending: asyncio.Queue[ConfigAck | FrameIn | FaceposeError | None] = (
            asyncio.Queue())

    async def run(self, receive: Callable[[], Awaitable[Incoming | None]],
                  send: Callable[[Outgoing], Awaitable[None]]) -> None:
        """receive: the next message, None when the client closed its side."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(receive))
                group.create_task(self._answer(send))
        except BaseExceptionGroup as failed:
            # The first failure says how the stream ends; the other task was only cancelled.
            raise failed.exceptions[0] from None

    def _start(self, config: Any) -> StreamSetup:
        setup = parse_config(self.settings, config)
        self.session = StreamSession(self.settings, self.runtime, setup, self.transport)
        return setup

    async def _read(self, receive: Callable[[], Awaitable[Incoming | None]]) -> None:
        try:
            await self._read_messages(receive)
        except (ProtocolError, BadOption, StreamIdle) as exc:
            # Queued behind the frames already read: those are answered before the stream ends.
            await self._pending.put(exc)

    async def _read_messages(self, receive: Callable[[], Awaitable[Incoming | None]]) -> None:
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
            await self._pending.put(message)

    async def _answer(self, send: Callable[[Outgoing], Awaitable[None]]) -> None:
        while (item := await self._pending.get()) is not None:
            if isinstance(item, FaceposeError):
                raise item
            if isinstance(item, ConfigAck):
                await self._send(send, item)
            else:
                await self._send(send, FrameDone(await self._process(item)))
            self._in_flight.release()
        await self._send(send, StreamEnd(self.session.frames if self.session is not None else 0))

    async def _process(self, frame: FrameIn) -> dict[str, Any]:
        """The frame's answer, worked out in a thread. Cancelled (the client gone), it still
        waits for the thread: model calls cannot be interrupted, and the stream's slot is given
        back only once they are done, so that what runs stays within the limits."""
        assert self.session is not None
        work = asyncio.get_running_loop().run_in_executor(None, self.session.process, frame)
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


# --- Streams open at once -------------------------------------------------------------------

class StreamSlots:
    """At most ``limit`` streams open at once; past it a stream is refused at once. Used from
    the event loop's thread only."""

    def __init__(self) -> None:
        self.open = 0

    @contextmanager
    def hold(self, transport: str, limit: int) -> Iterator[None]:
        if self.open >= limit:
            STREAMS_REJECTED.labels(transport).inc()
            raise Overloaded(f"{limit} video streams are open, the most this service takes; "
                             "retry later")
        self.open += 1
        STREAMS_OPEN.labels(transport).inc()
        try:
            yield
        finally:
            self.open -= 1
            STREAMS_OPEN.labels(transport).dec()


# One per process: the WebSocket and gRPC servers share the gateway's event loop.
OPEN_STREAMS = StreamSlots()
