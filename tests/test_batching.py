"""The batcher waits for company only when an admitted request is still on its way."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from service.app.batcher import RequestBatcher
from service.errors import ShuttingDown
from service.pipeline.records import ImageRequest, ImageResult, PipelineOptions
from service.pipeline.solve import Camera

MAX_WAIT_S = 0.5


def image_request() -> ImageRequest:
    return ImageRequest(np.zeros((8, 8, 3), np.uint8), Camera(10, 10, 4, 4, "default"),
                        PipelineOptions(1, 0.5, 0.5))


def run_groups(groups: list[int]) -> object:
    def run(requests: list[ImageRequest]) -> list[ImageResult]:
        groups.append(len(requests))
        return [ImageResult(r.camera) for r in requests]
    return run


def test_a_lone_request_is_not_held_back() -> None:
    async def scenario() -> float:
        admitted = 1
        groups: list[int] = []
        batcher = RequestBatcher(run_groups(groups), 8, MAX_WAIT_S, workers=2,  # type: ignore[arg-type]
                                 in_service=lambda: admitted)
        batcher.start()
        started = time.perf_counter()
        await batcher.submit([image_request()])
        seconds = time.perf_counter() - started
        await batcher.stop()
        return seconds

    assert asyncio.run(scenario()) < MAX_WAIT_S / 5


def test_a_request_on_its_way_is_waited_for_and_grouped() -> None:
    async def scenario() -> tuple[list[int], float]:
        groups: list[int] = []
        batcher = RequestBatcher(run_groups(groups), 8, MAX_WAIT_S, workers=2,  # type: ignore[arg-type]
                                 in_service=lambda: 2)
        batcher.start()
        started = time.perf_counter()

        async def late() -> list[ImageResult]:
            await asyncio.sleep(0.05)  # still decoding when the first is queued
            return await batcher.submit([image_request()])

        await asyncio.gather(batcher.submit([image_request()]), late())
        seconds = time.perf_counter() - started
        await batcher.stop()
        return groups, seconds

    groups, seconds = asyncio.run(scenario())
    assert groups == [2]
    assert seconds < MAX_WAIT_S / 2


def test_a_failing_request_is_run_again_alone_and_fails_only_itself() -> None:
    poisoned = image_request()
    groups: list[int] = []

    def run(requests: list[ImageRequest]) -> list[ImageResult]:
        groups.append(len(requests))
        if any(r is poisoned for r in requests):
            raise ValueError("this image breaks the model")
        return [ImageResult(r.camera) for r in requests]

    async def scenario() -> list[object]:
        batcher = RequestBatcher(run, 8, MAX_WAIT_S, 1, in_service=lambda: 3)
        batcher.start()
        try:
            return await asyncio.gather(batcher.submit([image_request()]),
                                        batcher.submit([poisoned]),
                                        batcher.submit([image_request(), image_request()]),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    first, second, third = asyncio.run(scenario())
    assert isinstance(second, ValueError)
    assert isinstance(first, list) and len(first) == 1
    assert isinstance(third, list) and len(third) == 2
    # The group of all four failed once; then each request ran on its own.
    assert groups == [4, 1, 1, 2]


def test_stopping_answers_every_waiting_submission() -> None:
    """A group still running, one being collected and one queued when the batcher stops: each
    caller gets ShuttingDown at once instead of waiting for ever (a stream's frame, a request
    past the shutdown grace)."""
    release = threading.Event()

    def run(requests: list[ImageRequest]) -> list[ImageResult]:
        release.wait(10)  # model calls that outlast the shutdown
        return [ImageResult(r.camera) for r in requests]

    async def scenario() -> list[BaseException | list[ImageResult]]:
        batcher = RequestBatcher(run, 1, MAX_WAIT_S, workers=1, in_service=lambda: 0)
        batcher.start()
        waiting = [asyncio.ensure_future(batcher.submit([image_request()])) for _ in range(3)]
        await asyncio.sleep(0.1)
        await batcher.stop()
        try:
            return await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 2)
        finally:
            release.set()

    answers = asyncio.run(scenario())
    assert [type(answer) for answer in answers] == [ShuttingDown] * 3
