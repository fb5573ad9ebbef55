"""`facepose batch`: stream a folder, glob or list of images through the gRPC API into JSON lines.

Resumable: paths already in the output are skipped, and every result is flushed as one line as
it arrives, so an interrupted run loses nothing. Transient failures (server unavailable,
overloaded, timed out) are retried with backoff; a bad image is recorded and the run goes on.
"""

from __future__ import annotations

import asyncio
import glob
import json
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import json_format
from tqdm import tqdm

from service.clients.remote import MAX_MESSAGE_BYTES, UNREADABLE_FILE
from service.endpoints import Endpoints
from service.grpc import facepose_pb2 as pb
from service.grpc import facepose_pb2_grpc as pb_grpc
from service.grpc.decode import image_result_to_dict

CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
             grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


class NoServer(Exception):
    """The server names resolve to no address."""


class NothingToDo(Exception):
    """The source names no image, or the output was written with other options: nothing is
    written and the command fails with this message."""


def collect_paths(source: str) -> list[str]:
    """A folder (recursive), one image, a text file of paths, or a glob; sorted, unique."""
    path = Path(source)
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        found = [path]
    elif path.is_file():
        lines = (line.strip() for line in path.read_text().splitlines())
        found = [Path(line) for line in lines if line and not line.startswith("#")]
    else:
        found = [Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file()]
        if not found:
            raise NothingToDo(f"{source}: no such folder or file, and no file matches it as a "
                              "glob")
    if not found:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise NothingToDo(f"{source}: no images in it ({kinds}, searched recursively)"
                          if path.is_dir() else f"{source}: the list names no path")
    return sorted({str(p) for p in found})


def options_path(out: Path) -> Path:
    """Where the options an output was written with are kept, beside it."""
    return out.with_name(out.name + ".options.json")


def check_options(out: Path, options: pb.Options) -> None:
    """Refuse to add answers made with other options to an output; record them on first use.

    An output from before the options were recorded is taken as made with these."""
    asked = json.loads(json_format.MessageToJson(options, sort_keys=True))
    recorded = options_path(out)
    if out.exists() and out.stat().st_size and recorded.exists():
        before = json.loads(recorded.read_text())
        if before != asked:
            raise NothingToDo(
                f"{out} holds answers made with other options ({json.dumps(before)}; now "
                f"{json.dumps(asked)}): resuming would mix them. Give another --out, or delete "
                f"{out} and {recorded.name} to start again.")
    out.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(asked) + "\n")


def completed_paths(out: Path) -> set[str]:
    """Paths already written; a last line cut short by a crash is removed first."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        out.write_bytes(data)
    done = set()
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            done.add(json.loads(line)["path"])
        except (ValueError, KeyError, TypeError):
            continue
    return done


@dataclass
class Summary:
    total: int
    skipped: int
    written: int = 0
    faces: int = 0
    failures: int = 0
    retries: int = 0
    started: float = field(default_factory=time.perf_counter)
    stopped: str | None = None  # why the run ended before every image was done

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.written / elapsed if elapsed > 0 else 0.0
        left = self.total - self.skipped - self.written
        return (f"images {self.written} (+{self.skipped} already done of {self.total}), "
                f"faces {self.faces}, failures {self.failures}, retries {self.retries}, "
                f"{rate:.1f} images/s"
                + (f"; stopped with {left} left: {self.stopped}" if self.stopped else ""))


class BatchRun:
    def __init__(self, paths: list[str], server: str, out: IO[str], options: pb.Options,
                 concurrency: int, retries: int, summary: Summary) -> None:
        self.pending: deque[str] = deque(paths)
        self.server = server
        self.out = out
        self.options = options
        self.concurrency = concurrency
        self.retries = retries
        self.summary = summary
        self.in_flight = 0  # paths sent on some stream and not yet answered
        self.answered: Counter[str] = Counter()  # answers per gateway address
        # A bar only on a terminal; elsewhere (a log) it would be lines of carriage returns
        # with the messages mixed in. Messages go through tqdm.write, above the bar.
        self.progress = tqdm(total=len(paths), unit="img", dynamic_ncols=True, file=sys.stderr,
                             disable=not sys.stderr.isatty())

    def record(self, path: str, entry: dict[str, Any] | None,
               error: dict[str, str] | None = None) -> None:
        error = error or (entry or {}).get("error")
        line = {"path": path, "error": error} if error else {"path": path, "result": entry}
        self.out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.out.flush()
        self.summary.written += 1
        if error:
            self.summary.failures += 1
        elif entry is not None:
            self.summary.faces += len(entry["faces"])
        self.progress.update(1)

    async def _stream_once(self, address: str, stub: pb_grpc.FacePoseStub,
                           concurrency: int) -> None:
        """One stream until nothing is pending; on failure its unanswered paths go back to the
        front of the queue (another gateway's stream may take them). Counts its answers in
        ``answered[address]``."""
        in_flight: set[str] = set()
        slots = asyncio.Semaphore(concurrency)
        call = stub.EstimateStream()

        async def send() -> None:
            while self.pending:
                await slots.acquire()
                if not self.pending:
                    break
                # In flight from the moment it leaves the queue: if the stream breaks while
                # the file is being read, the path still goes back.
                path = self.pending.popleft()
                in_flight.add(path)
                self.in_flight += 1
                try:
                    data = await asyncio.to_thread(Path(path).read_bytes)
                except OSError as exc:
                    in_flight.discard(path)
                    self.in_flight -= 1
                    self.record(path, None, {"code": UNREADABLE_FILE, "message": str(exc)})
                    slots.release()
                    continue
                await call.write(pb.StreamRequest(id=path, image=pb.Image(data=data),
                                                  options=self.options))
            await call.done_writing()

        sender = asyncio.create_task(send())
        try:
            async for result in call:
                if result.id not in in_flight:
                    tqdm.write(f"{address}: an answer for {result.id!r}, which this stream did "
                               "not send (or already had): ignored", file=sys.stderr)
                    continue
                in_flight.discard(result.id)
                self.in_flight -= 1
                self.answered[address] += 1
                self.record(result.id, image_result_to_dict(result.result))
                slots.release()
            await sender
        finally:
            sender.cancel()
            self.in_flight -= len(in_flight)
            self.pending.extendleft(sorted(in_flight, reverse=True))

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.progress.close()

    async def _run(self) -> None:
        """One stream per gateway address (``service.endpoints``: a list, or a name with
        several addresses), all taking from one queue: a stream pins one connection, so one
        stream would load one gateway whatever the rest."""
        addresses = await asyncio.to_thread(Endpoints.parse(self.server).addresses)
        if not addresses:
            raise NoServer(f"no address found for {self.server}")
        # --concurrency split over the streams (at least one image each).
        base, extra = divmod(self.concurrency, len(addresses))
        shares = [max(1, base + (i < extra)) for i in range(len(addresses))]
        outcomes = await asyncio.gather(*(self._serve_from(a, share)
                                          for a, share in zip(addresses, shares, strict=True)),
                                        return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if self.pending and failures:
            raise failures[0]

    async def _serve_from(self, address: str, concurrency: int) -> None:
        """Streams to one gateway while anything is pending or in flight elsewhere (a path
        another stream gives back); retried with backoff, given up past the retries."""
        attempt = 0
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.FacePoseStub(channel)
            while self.work_left():
                if not self.pending:
                    await asyncio.sleep(0.05)
                    continue
                before = self.answered[address]
                try:
                    await self._stream_once(address, stub, concurrency)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in TRANSIENT:
                        raise
                    # Progress through this gateway only: others' answers say nothing of it.
                    attempt = 0 if self.answered[address] > before else attempt + 1
                    if attempt > self.retries:
                        raise
                    self.summary.retries += 1
                    delay = min(30.0, 0.5 * 2 ** attempt)
                    tqdm.write(f"{address}: {exc.code().name}: {exc.details()}; retrying in "
                               f"{delay:.1f} s", file=sys.stderr)
                    await self._back_off(delay)

    def work_left(self) -> bool:
        return bool(self.pending) or self.in_flight > 0

    async def _back_off(self, delay_s: float) -> None:
        """Sleep ``delay_s``, or less when the other streams finish the work meanwhile."""
        loop = asyncio.get_running_loop()
        until = loop.time() + delay_s
        while self.work_left() and loop.time() < until:
            await asyncio.sleep(min(0.1, until - loop.time()))


def run_batch(source: str, server: str, out: Path, options: pb.Options, concurrency: int = 16,
              retries: int = 6) -> Summary:
    """Every image of ``source`` not already in ``out``, estimated into it. The summary says
    what was done, and ``stopped`` why it ended early (the server gone past the retries, or
    an interrupt); what was written stays, and the same call resumes. Raises NothingToDo,
    having written nothing, for a source without images or an output made with other
    options."""
    paths = collect_paths(source)
    check_options(out, options)
    done = completed_paths(out)
    todo = [p for p in paths if p not in done]
    summary = Summary(total=len(paths), skipped=len(paths) - len(todo))
    with out.open("a", encoding="utf-8") as handle:
        try:
            asyncio.run(BatchRun(todo, server, handle, options, concurrency, retries,
                                 summary).run())
        except grpc.RpcError as exc:
            summary.stopped = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
        except NoServer as exc:
            summary.stopped = str(exc)
        except KeyboardInterrupt:
            summary.stopped = "interrupted"
    return summary
