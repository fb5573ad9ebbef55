"""StreamRunner's bounds, in process: a client that stops reading, a client that vanishes."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.app.admission import MB, MemoryBudget
from service.app.streams import (
    ConfigIn,
    FrameDone,
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
    runner = StreamRunner(settings, create_runtime(settings), MemoryBudget(1 << 40), "websocket")
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
    runner = StreamRunner(settings, create_runtime(settings), MemoryBudget(1 << 40), "websocket")
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


def test_a_streams_frames_hold_the_memory_budget_until_answered() -> None:
    """A frame held while worked on; one the budget has no room for is answered with its
    error and the stream goes on; all is let go when the stream ends."""
    settings = Settings()
    runtime = create_runtime(settings)
    frame = encode(astronaut())  # 512x512: 0.26 MP, about 3 MB held
    memory = MemoryBudget(8 * MB)
    with memory.hold("other") as other:
        sent = iter([FrameIn(frame, 0.0, "fits"), "fill", FrameIn(frame, 40.0, "no room"),
                     "empty", FrameIn(frame, 80.0, "fits again")])

        async def receive() -> Incoming | None:
            while (item := next(sent, None)) in ("fill", "empty"):
                if item == "fill":
                    await asyncio.sleep(0.5)  # the first frame answered and let go
                    other.add(7 * MB)
                else:
                    other.release(7 * MB)
            return item

        answers: list[tuple[object, str | None]] = []

        async def send(outgoing: Outgoing) -> None:
            if isinstance(outgoing, FrameDone):
                error = outgoing.outcome.error
                answers.append((outgoing.outcome.frame_id, error and error.code))

        try:
            asyncio.run(StreamRunner(settings, runtime, memory, "websocket").run(receive, send))
        finally:
            runtime.close()
    assert answers == [("fits", None), ("no room", "overloaded"), ("fits again", None)]
    assert memory.held == 0
