"""Group the images of concurrent requests into one pipeline call (bounded wait and size).

Each group's faces then reach every model in one batched call, so concurrent clients share
model calls: on Triton that is one request per model per group. Video streams' frames ride in the
same groups as still images.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from service.errors import ShuttingDown
from service.metrics import GROUP_IMAGES, GROUP_REQUESTS, QUEUE_DEPTH, STAGE_SECONDS
from service.pipeline.records import ImageRequest, ImageResult

Run = Callable[[list[ImageRequest]], list[ImageResult]]


@dataclass
class _Pending:
    requests: list[ImageRequest]
    future: asyncio.Future[list[ImageResult]]
    queued_at: float = field(default_factory=time.perf_counter)


class RequestBatcher:
    """``submit`` returns each caller its own results, in order, whatever group it rode in.

    One collector forms the groups and up to ``workers`` groups run at once. While every runner
    is busy the queue fills, and the next group takes all of it (up to ``max_images``).
    """

    def __init__(self, run: Run, max_images: int, max_wait_s: float, workers: int,
                 in_service: Callable[[], int] | None = None) -> None:
        """in_service: how many requests the service has admitted (None: unknown). A group
        waits for more only while some admitted request is not yet queued or running: a lone
        request is not held back for company that cannot come."""
        self._run = run
        self._max_images = max_images
        self._max_wait_s = max_wait_s
        self._workers = workers
        self._in_service = in_service
        self._coming = 0  # submissions on their way that ``in_service`` does not count
        self._held = 0  # submissions in the group being collected
        self._collecting: list[_Pending] = []
        self._running = 0  # submissions in groups being run
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._collector: asyncio.Task[None] | None = None
        self._groups: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._collector = asyncio.create_task(self._collect_forever())

    async def stop(self) -> None:
        """Stop collecting and running groups; whoever still waits for a result (a request past
        the shutdown grace, a stream's frame) gets ShuttingDown instead of waiting for ever."""
        tasks = [t for t in (self._collector, *self._groups) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._collector, self._groups = None, set()
        for pending in self._collecting:
            _refuse(pending)
        self._collecting = []
        while not self._queue.empty():
            _refuse(self._queue.get_nowait())

    async def submit(self, requests: list[ImageRequest]) -> list[ImageResult]:
        if not requests:
            return []
        future: asyncio.Future[list[ImageResult]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(requests, future))
        QUEUE_DEPTH.inc(len(requests))
        return await future

    @contextmanager
    def coming(self) -> Iterator[None]:
        """Count a submission on its way (a stream's frame, from when it is read to when it is
        answered) as one a group may wait for, as ``in_service`` counts requests."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1

    def _more_may_come(self) -> bool:
        if self._in_service is None:
            return True
        return (self._in_service() + self._coming
                > self._held + self._running + self._queue.qsize())

    async def _collect(self) -> list[_Pending]:
        group = self._collecting = [await self._queue.get()]
        self._held = 1
        count = len(group[0].requests)
        deadline = time.perf_counter() + self._max_wait_s
        while count < self._max_images:
            try:
                pending = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if not self._more_may_come():
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    pending = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            group.append(pending)
            self._held += 1
            count += len(pending.requests)
        return group

    async def _collect_forever(self) -> None:
        runners = asyncio.Semaphore(self._workers)
        while True:
            await runners.acquire()
            group = await self._collect()
            self._held, self._collecting = 0, []
            QUEUE_DEPTH.dec(sum(len(p.requests) for p in group))
            # A caller that went away (cancelled) needs no work done for it.
            group = [p for p in group if not p.future.done()]
            if not group:
                runners.release()
                continue
            self._running += len(group)
            task = asyncio.create_task(self._run_group(group))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)
            task.add_done_callback(lambda _: runners.release())

    async def _run_group(self, group: list[_Pending]) -> None:
        try:
            await self._run_group_of(group)
        except asyncio.CancelledError:
            for pending in group:  # the batcher is stopping: see ``stop``
                _refuse(pending)
            raise

    async def _run_group_of(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        for pending in group:
            STAGE_SECONDS.labels("queue").observe(started - pending.queued_at)
        flat = [request for pending in group for request in pending.requests]
        GROUP_IMAGES.observe(len(flat))
        GROUP_REQUESTS.observe(len(group))
        try:
            results = await asyncio.to_thread(self._run, flat)
        except Exception:
            # One caller's input must not fail the others: each is run again on its own.
            for pending in group:
                await self._run_alone(pending)
            return
        finally:
            self._running -= len(group)
        start = 0
        for pending in group:
            stop = start + len(pending.requests)
            if not pending.future.done():
                pending.future.set_result(results[start:stop])
            start = stop

    async def _run_alone(self, pending: _Pending) -> None:
        if pending.future.done():
            return
        try:
            results = await asyncio.to_thread(self._run, pending.requests)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        if not pending.future.done():
            pending.future.set_result(results)


def _refuse(pending: _Pending) -> None:
    if not pending.future.done():
        pending.future.set_exception(ShuttingDown("the service is shutting down"))
