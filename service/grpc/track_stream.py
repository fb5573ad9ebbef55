"""gRPC transport for video streams: the ``Track`` method's messages to and from
``app/streams.py``, which does the work for both transports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from service.app.core import Core
from service.app.streams import (
    ConfigIn,
    FrameDone,
    FrameIn,
    Incoming,
    Outgoing,
    StreamConfig,
    StreamRunner,
)
from service.errors import ProtocolError, ShuttingDown
from service.grpc import facepose_pb2 as pb
from service.grpc.messages import config_from_proto, track_message


def incoming_from_proto(request: pb.TrackRequest, config_model: type[StreamConfig]
                        ) -> Incoming:
    kind = request.WhichOneof("kind")
    if kind == "config":
        return ConfigIn(config_from_proto(config_model, request.config))
    if kind == "frame":
        frame = request.frame
        return FrameIn(frame.data,
                       frame.timestamp_ms if frame.HasField("timestamp_ms") else None, frame.id)
    raise ProtocolError("a TrackRequest holds a config or a frame")


async def track_frames(core: Core, requests: AsyncIterator[pb.TrackRequest],
                       config_model: type[StreamConfig]) -> AsyncIterator[pb.TrackResult]:
    """The results of one Track call, in order. Raises BackendUnavailable, Overloaded (too many
    streams), ProtocolError, BadOption, StreamIdle or ShuttingDown (at once when the core
    closes) for the servicer to turn into a status."""
    settings = core.settings
    with core.stream("grpc"):
        runner = StreamRunner(settings, core.batcher, core.memory, "grpc", config_model)
        # Bounded: a client that stops reading stops the stream's work too.
        results: asyncio.Queue[pb.TrackResult] = asyncio.Queue(
            settings.stream_max_frames_in_flight)
        messages = aiter(requests)

        async def receive() -> Incoming | None:
            try:
                return incoming_from_proto(await anext(messages), config_model)
            except StopAsyncIteration:
                return None

        async def send(outgoing: Outgoing) -> None:
            # The config in force and the end have no message of their own here.
            if isinstance(outgoing, FrameDone):
                await results.put(track_message(outgoing.outcome))

        running = asyncio.create_task(runner.run(receive, send))
        stopping = asyncio.ensure_future(core.closing.wait())
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
