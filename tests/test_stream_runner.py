"""StreamRunner's bounds, in process: a client that stops reading, a client that vanishes."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.app.streams import (
    ConfigIn,
    FrameIn,
    Incoming,
    Outgoing,
    StreamIdle,
    StreamRunner,
)
from service.config import Settings
from service.runtime import create_runtime
from tests.images import astronaut, encode


def test_a_client_that_reads_nothing_is_ended_after_the_idle_timeout() -> None:
    settings = Settings(stream_idle_timeout_s=0.3)
    runner = StreamRunner(settings, create_runtime(settings), "websocket")
    sent = iter([ConfigIn({})])

    async def receive() -> Incoming | None:
        try:
            return next(sent)
        except StopIteration:
            await asyncio.sleep(3600)  # quiet, but not gone
            return None

    async def send(outgoing: Outgoing) -> None:
        await asyncio.Event().wait()  # the transport's buffers are full: never done

    async def scenario() -> float:
        started = time.perf_counter()
        with pytest.raises(StreamIdle, match="read nothing"):
            await runner.run(receive, send)
        return time.perf_counter() - started

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) < 2.0


def test_a_vanished_client_releases_the_stream_only_after_its_frame_is_done() -> None:
    settings = Settings()
    runner = StreamRunner(settings, create_runtime(settings), "websocket")
    frame = encode(astronaut())
    workers_busy = threading.Event()
    original = None

    async def receive() -> Incoming | None:
        return FrameIn(frame, timestamp_ms=0.0)

    async def send(outgoing: Outgoing) -> None:
        return None

    async def scenario() -> tuple[bool, bool]:
        nonlocal original
        running = asyncio.create_task(runner.run(receive, send))
        while runner.session is None:
            await asyncio.sleep(0.001)
        original = runner.session.process

        def slow_process(item: FrameIn) -> dict:
            workers_busy.set()
            time.sleep(0.3)
            result = original(item)
            workers_busy.clear()
            return result

        runner.session.process = slow_process  # type: ignore[method-assign]
        while not workers_busy.is_set():
            await asyncio.sleep(0.001)
        running.cancel()  # the client is gone mid-frame
        await asyncio.gather(running, return_exceptions=True)
        return running.cancelled(), workers_busy.is_set()

    cancelled, still_working = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert cancelled
    assert not still_working  # the frame's work was finished before the stream let go
