"""gRPC transport for video streams: the ``Track`` method's messages to and from
``service.streaming``, which does the work for both transports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from service.config import Settings
from service.errors import ShuttingDown
from service.grpc import facepose_pb2 as pb
from service.grpc.convert import INCLUDE_NAMES, image_result_to_proto
from service.runtime.base import InferenceRuntime
from service.streaming import (
    OPEN_STREAMS,
    ConfigIn,
    FrameDone,
    FrameIn,
    Incoming,
    Outgoing,
    ProtocolError,
    StreamRunner,
)

ONE_EURO_FIELDS = ("min_cutoff_hz", "beta", "d_cutoff_hz")


def _set_fields(message: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(message, name) for name in names if message.HasField(name)}


def config_from_proto(config: pb.TrackConfig) -> dict[str, Any]:
    """The config as the JSON object a WebSocket client would send; validated downstream."""
    options = config.options
    data: dict[str, Any] = {
        "include": [INCLUDE_NAMES.get(value, f"unknown({value})") for value in options.include],
        **_set_fields(options, ("max_faces", "min_score", "min_presence")),
        **_set_fields(options.intrinsics, ("fx", "fy", "cx", "cy")),
        **_set_fields(config, ("detect_every", "fps")),
    }
    smoothing = config.smoothing
    data["smoothing"] = {"enabled": not smoothing.disabled, **{
        part: _set_fields(getattr(smoothing, part), ONE_EURO_FIELDS)
        for part in ("rotation", "translation", "landmarks")}}
    return data


def incoming_from_proto(request: pb.TrackRequest) -> Incoming:
    kind = request.WhichOneof("kind")
    if kind == "config":
        return ConfigIn(config_from_proto(request.config))
    if kind == "frame":
        frame = request.frame
        return FrameIn(frame.data,
                       frame.timestamp_ms if frame.HasField("timestamp_ms") else None, frame.id)
    raise ProtocolError("a TrackRequest holds a config or a frame")


def result_to_proto(body: dict[str, Any]) -> pb.TrackResult:
    """A frame's answer (``streaming.StreamFrameOut`` as a dict) as a TrackResult."""
    result = image_result_to_proto({**body, "index": body["frame"]})
    for message, face in zip(result.faces, body["faces"], strict=True):
        message.track_id = face["track_id"]
    track_result = pb.TrackResult(id="" if body["id"] is None else str(body["id"]),
                                  frame=body["frame"], detected=body["detected"], result=result)
    if body["timestamp_ms"] is not None:
        track_result.timestamp_ms = body["timestamp_ms"]
    return track_result


async def track_frames(settings: Settings, runtime: InferenceRuntime,
                       requests: AsyncIterator[pb.TrackRequest], closing: asyncio.Event
                       ) -> AsyncIterator[pb.TrackResult]:
    """The results of one Track call, in order. Raises Overloaded (too many streams),
    ProtocolError, BadOption, StreamIdle or ShuttingDown (at once when ``closing`` is set) for
    the servicer to turn into a status."""
    with OPEN_STREAMS.hold("grpc", settings.stream_max_streams):
        runner = StreamRunner(settings, runtime, "grpc")
        # Bounded: a client that stops reading stops the stream's work too.
        results: asyncio.Queue[pb.TrackResult] = asyncio.Queue(
            settings.stream_max_frames_in_flight)
        messages = aiter(requests)

        async def receive() -> Incoming | None:
            try:
                return incoming_from_proto(await anext(messages))
            except StopAsyncIteration:
                return None

        async def send(outgoing: Outgoing) -> None:
            # The config in force and the end have no message of their own here.
            if isinstance(outgoing, FrameDone):
                await results.put(result_to_proto(outgoing.body))

        running = asyncio.create_task(runner.run(receive, send))
        stopping = asyncio.ensure_future(closing.wait())
        try:
            while True:
                getting = asyncio.ensure_future(results.get())
                done, _ = await asyncio.wait({getting, running, stopping},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getting in done:
                    yield getting.result()
                    continue
                getting.cancel()
                if running not in done:
                    raise ShuttingDown("the service is shutting down: reconnect")
                while not results.empty():
                    yield results.get_nowait()
                running.result()
                return
        finally:
            # A client gone: its frames' model calls finish before the stream is released.
            stopping.cancel()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
