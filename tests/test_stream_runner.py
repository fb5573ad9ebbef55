"""StreamRunner in process: its bounds (a client that stops reading, a client that vanishes, the
memory budget) and its frames as requests of the batcher."""

from __future__ import annotations

import asyncio
import threading
import time
from functools import partial

import numpy as np
import pytest

from service.app.admission import MB, MemoryBudget
from service.app.batcher import RequestBatcher
from service.app.streams import (
    ConfigIn,
    FrameDone,
    FrameIn,
    Incoming,
    InThread,
    Outgoing,
    StreamIdle,
    StreamRunner,
)
from service.config import Settings
from service.pipeline.estimate import estimate_faces
from service.pipeline.presets import PRESETS
from service.pipeline.records import ImageRequest, ImageResult
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from tests.images import astronaut, encode


def test_a_client_that_reads_nothing_is_ended_after_the_idle_timeout() -> None:
    settings = Settings(stream_idle_timeout_s=0.3)
    runner = StreamRunner(settings, InThread(create_runtime(settings)), MemoryBudget(1 << 40),
                          "websocket")
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


class SlowEngine(InThread):
    """Each frame's model calls take 0.3 s longer; ``busy`` while they run."""

    def __init__(self, runtime: InferenceRuntime) -> None:
        super().__init__(runtime)
        self.busy = threading.Event()

    async def submit(self, requests: list[ImageRequest]) -> list[ImageResult]:
        def run() -> list[ImageResult]:
            self.busy.set()
            time.sleep(0.3)
            results = estimate_faces(self.runtime, requests)
            self.busy.clear()
            return results

        return await asyncio.to_thread(run)


def test_a_vanished_client_releases_the_stream_only_after_its_frame_is_done() -> None:
    settings = Settings()
    engine = SlowEngine(create_runtime(settings))
    runner = StreamRunner(settings, engine, MemoryBudget(1 << 40), "websocket")
    frame = encode(astronaut())

    async def receive() -> Incoming | None:
        return FrameIn(frame, timestamp_ms=0.0)

    async def send(outgoing: Outgoing) -> None:
        return None

    async def scenario() -> tuple[bool, bool]:
        running = asyncio.create_task(runner.run(receive, send))
        while not engine.busy.is_set():
            await asyncio.sleep(0.001)
        running.cancel()  # the client is gone mid-frame
        await asyncio.gather(running, return_exceptions=True)
        return running.cancelled(), engine.busy.is_set()

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
            runner = StreamRunner(settings, InThread(runtime), memory, "websocket")
            asyncio.run(runner.run(receive, send))
        finally:
            runtime.close()
    assert answers == [("fits", None), ("no room", "overloaded"), ("fits again", None)]
    assert memory.held == 0


class MeshBatches:
    """The real runtime, noting the batch size of every face-mesh call."""

    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime, self.specs = runtime, runtime.specs
        self.batches: list[int] = []

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if model == PRESETS["balanced"].mesh_model:
            self.batches.append(len(next(iter(inputs.values()))))
        return self.runtime.infer(model, inputs)

    def is_ready(self) -> bool:
        return True

    def close(self) -> None:
        self.runtime.close()


def test_concurrent_streams_share_model_calls_through_the_batcher() -> None:
    """Two streams' frames ride in the same groups: each frame after the first fits both
    streams' faces in one mesh call, and each stream keeps its own track ids."""
    settings = Settings()
    runtime = MeshBatches(create_runtime(settings))
    frame = encode(astronaut())
    frames = 6

    async def stream(batcher: RequestBatcher, answers: list[list[int]]) -> None:
        sent = iter([ConfigIn({"detect_every": 100})]
                    + [FrameIn(frame, 40.0 * k) for k in range(frames)])

        async def receive() -> Incoming | None:
            return next(sent, None)

        async def send(outgoing: Outgoing) -> None:
            if isinstance(outgoing, FrameDone):
                assert outgoing.outcome.error is None
                answers.append([track_id for track_id, _ in outgoing.outcome.faces])

        await StreamRunner(settings, batcher, MemoryBudget(1 << 40), "websocket").run(
            receive, send)

    async def scenario() -> list[list[list[int]]]:
        # One group at a time, each waiting for the frame the other stream has on its way.
        batcher = RequestBatcher(partial(estimate_faces, runtime), max_images=8,
                                 max_wait_s=1.0, workers=1, in_service=lambda: 0)
        batcher.start()
        answers: list[list[list[int]]] = [[], []]
        try:
            await asyncio.gather(*(stream(batcher, per_stream) for per_stream in answers))
        finally:
            await batcher.stop()
        return answers

    try:
        answers = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        runtime.close()
    assert answers == [[[1]] * frames] * 2
    # The first frame detects and fits (several calls); every later one follows both faces in
    # one call.
    assert runtime.batches[-(frames - 1):] == [2] * (frames - 1)
