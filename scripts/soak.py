"""Soak: minutes of mixed traffic against one gateway, watching errors, latency and memory.

    python scripts/soak.py [--minutes 10] [--workers 4] [--url URL --grpc HOST:PORT [--pid PID]]

Without --url it starts a gateway of its own on free loopback ports (its log goes to a file,
named at the start). A few worker threads send, until the time is up: single images over REST
(raw body), multipart batches with a bad image among good ones, bad images alone, gRPC
Estimate and gRPC EstimateStream. Every answer is checked: a good image must get the face count
it got at warm-up, a bad one its own error; a 5xx, an unexpected gRPC status, a transport error
or a wrong answer counts as an error. Every 30 s a line gives the gateway's resident memory
(VmRSS); at the end a table gives requests by kind and status, errors, p50/p99 latency per kind
and memory at start, peak and end. The exit status is 1 if there was any error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import grpc
import httpx
import numpy as np
from skimage import data

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench import gateway  # noqa: E402

from service.clients import GrpcClient, RestClient  # noqa: E402

# Statuses that are the service working as designed when it is full, not errors.
SHED_HTTP = {429}
SHED_GRPC = {"RESOURCE_EXHAUSTED"}
KINDS = ("rest_single", "rest_batch", "rest_bad", "grpc_estimate", "grpc_stream")
WEIGHTS = (35, 15, 15, 20, 15)


def encode(image: np.ndarray, extension: str) -> bytes:
    ok, buffer = cv2.imencode(extension, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buffer.tobytes()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header that declares width x height pixels, with next to no data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(16))) + chunk(b"IEND", b""))


def make_images() -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Good images (name -> bytes) and bad ones (name -> bytes)."""
    face = data.astronaut()
    tile = cv2.resize(face, (256, 256))
    vga = np.full((480, 640, 3), 90, np.uint8)
    vga[:, 64:576] = cv2.resize(face, (512, 480))
    good = {
        "astronaut.jpg": encode(face, ".jpg"),
        "vga.jpg": encode(vga, ".jpg"),
        "turned.png": encode(cv2.rotate(tile, cv2.ROTATE_90_CLOCKWISE), ".png"),
        "pair.webp": encode(np.hstack([tile, tile[:, ::-1]]), ".webp"),
        "blank.png": encode(np.full((64, 64, 3), 200, np.uint8), ".png"),
    }
    jpeg = good["astronaut.jpg"]
    bad = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "text.jpg": b"this is not an image",
        "empty.jpg": b"",
        "bomb.png": png_declaring(100_000, 100_000),
    }
    return good, bad


def pid_listening_on(port: int) -> int | None:
    """The process with a socket listening on the loopback TCP port (Linux /proc), if ours to
    see."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None


def rss_mib(pid: int | None, key: str = "VmRSS") -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Tally:
    """What happened, shared by the workers."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def record(self, kind: str, status: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            self.latencies[kind].append(seconds)
            if error is not None:
                self.errors[kind] += 1
                if len(self.examples) < 20:
                    self.examples.append(f"{kind}: {error}")

    def total(self) -> tuple[int, int]:
        with self.lock:
            return (sum(sum(c.values()) for c in self.statuses.values()),
                    sum(self.errors.values()))


class Outcome(Exception):
    """How a request ended other than as expected: ``status`` for the table, ``error`` (None
    when the service was right to answer so, e.g. shedding load)."""

    def __init__(self, status: str, error: str | None) -> None:
        super().__init__(error or status)
        self.status, self.error = status, error


def face_count(entry: dict[str, Any]) -> int:
    return len(entry["faces"])


class Traffic:
    """One worker's requests; each method returns the status for the table or raises Outcome."""

    def __init__(self, url: str, target: str, good: dict[str, bytes], bad: dict[str, bytes],
                 expected: dict[str, int], seed: int) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)
        self.rest = RestClient(url, timeout_s=60)
        self.rpc = GrpcClient(target, timeout_s=60)
        self.good, self.bad, self.expected = good, bad, expected
        self.random = random.Random(seed)

    def close(self) -> None:
        self.http.close()
        self.rest.close()
        self.rpc.close()

    def pick(self, images: dict[str, bytes]) -> tuple[str, bytes]:
        name = self.random.choice(sorted(images))
        return name, images[name]

    def check(self, names: list[str], entries: list[dict[str, Any]]) -> None:
        """Each entry as expected: good images their warm-up face count, bad ones an error."""
        if len(entries) != len(names):
            raise Outcome("wrong", f"{len(entries)} entries for {len(names)} images")
        for index, (name, entry) in enumerate(zip(names, entries, strict=True)):
            if entry.get("index", index) != index:
                raise Outcome("wrong", f"entry {index} has index {entry.get('index')}")
            if name in self.bad:
                if not entry.get("error"):
                    raise Outcome("wrong", f"bad image {name} got no error")
            elif entry.get("error"):
                raise Outcome("wrong", f"{name}: unexpected error {entry['error']}")
            elif face_count(entry) != self.expected[name]:
                raise Outcome("wrong", f"{name}: {face_count(entry)} faces, expected "
                                       f"{self.expected[name]}")

    def http_status(self, response: httpx.Response, expected: set[int]) -> str:
        status = str(response.status_code)
        if response.status_code in expected:
            return status
        if response.status_code in SHED_HTTP:
            raise Outcome(status, None)
        raise Outcome(status, f"HTTP {status}: {response.text[:200]}")

    def rest_single(self) -> str:
        name, image = self.pick(self.good)
        include = self.random.choice(["", "landmarks68", "mesh,iris"])
        response = self.http.post("/v1/faces", content=image, params={"include": include},
                                  headers={"Content-Type": "application/octet-stream"})
        status = self.http_status(response, {200})
        self.check([name], response.json()["images"])
        return status

    def rest_batch(self) -> str:
        picks = [self.pick(self.good) for _ in range(self.random.randint(2, 4))]
        picks.insert(self.random.randint(0, len(picks)), self.pick(self.bad))
        try:
            entries = self.rest.faces([image for _, image in picks], include=["landmarks68"])
        except httpx.HTTPStatusError as exc:
            self.http_status(exc.response, set())
            raise
        self.check([name for name, _ in picks], entries)
        return "200"

    def rest_bad(self) -> str:
        name, image = self.pick(self.bad)
        response = self.http.post("/v1/faces", content=image,
                                  headers={"Content-Type": "image/jpeg"})
        status = self.http_status(response, {400, 413, 415, 422})
        body = response.json()
        if set(body) != {"error"} or not body["error"].get("code"):
            raise Outcome(status, f"{name}: error body {body}")
        return status

    def grpc_call(self, call: Callable[[], None]) -> str:
        try:
            call()
        except grpc.RpcError as exc:
            code = exc.code().name
            if code in SHED_GRPC:
                raise Outcome(code, None) from None
            raise Outcome(code, f"gRPC {code}: {exc.details()}") from None
        return "OK"

    def grpc_estimate(self) -> str:
        picks = [self.pick(self.good) for _ in range(self.random.randint(1, 3))]
        if self.random.random() < 0.5:
            picks.append(self.pick(self.bad))

        def call() -> None:
            self.check([name for name, _ in picks],
                       self.rpc.estimate([image for _, image in picks], include=["mesh"]))

        return self.grpc_call(call)

    def grpc_stream(self) -> str:
        picks = [self.pick(self.good) for _ in range(self.random.randint(2, 6))]
        items = [(f"{i}:{name}", image) for i, (name, image) in enumerate(picks)]

        def call() -> None:
            seen = {}
            for item_id, entry in self.rpc.stream(iter(items), include=["landmarks68"]):
                seen[item_id] = entry
            if set(seen) != {item_id for item_id, _ in items}:
                raise Outcome("wrong", f"stream answered {sorted(seen)} for "
                                       f"{[i for i, _ in items]}")
            for item_id, entry in seen.items():
                name = item_id.split(":", 1)[1]
                if entry.get("error") or face_count(entry) != self.expected[name]:
                    raise Outcome("wrong", f"stream {name}: {entry.get('error')}, "
                                           f"{face_count(entry)} faces")

        return self.grpc_call(call)

    def one(self, kind: str) -> tuple[str, str | None]:
        try:
            return getattr(self, kind)(), None
        except Outcome as outcome:
            return outcome.status, outcome.error
        except (httpx.HTTPError, OSError) as exc:
            return "transport", f"{type(exc).__name__}: {exc}"
        except (KeyError, ValueError, TypeError) as exc:
            return "malformed", f"{type(exc).__name__}: {exc}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def warm_up(url: str, good: dict[str, bytes]) -> dict[str, int]:
    """The face count of each good image (what every later answer must repeat)."""
    expected = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        for name, image in good.items():
            response = http.post("/v1/faces", content=image,
                                 headers={"Content-Type": "application/octet-stream"})
            response.raise_for_status()
            expected[name] = face_count(response.json()["images"][0])
    return expected


def soak(url: str, target: str, pid: int | None, minutes: float, workers: int,
         sample_s: float, seed: int) -> int:
    good, bad = make_images()
    expected = warm_up(url, good)
    print(f"faces per image at warm-up: {expected}", flush=True)
    tally = Tally()
    started = time.monotonic()
    deadline = started + minutes * 60
    stop = threading.Event()

    def work(index: int) -> None:
        traffic = Traffic(url, target, good, bad, expected, seed + index)
        try:
            while time.monotonic() < deadline and not stop.is_set():
                kind = traffic.random.choices(KINDS, WEIGHTS)[0]
                began = time.perf_counter()
                status, error = traffic.one(kind)
                tally.record(kind, status, time.perf_counter() - began, error)
        finally:
            traffic.close()

    rss_start = rss_mib(pid)
    samples = [rss_start] if rss_start is not None else []
    print(f"{'elapsed':>8} {'requests':>9} {'errors':>7} {'req/s':>7} {'RSS MiB':>8}",
          flush=True)

    def line() -> None:
        elapsed = time.monotonic() - started
        total, errors = tally.total()
        rss = rss_mib(pid)
        if rss is not None:
            samples.append(rss)
        shown = f"{rss:8.0f}" if rss is not None else f"{'n/a':>8}"
        print(f"{elapsed:7.0f}s {total:9d} {errors:7d} {total / max(elapsed, 1e-9):7.1f} {shown}",
              flush=True)

    line()
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        next_sample = started + sample_s
        while any(thread.is_alive() for thread in threads):
            time.sleep(min(0.5, max(0.0, next_sample - time.monotonic())))
            if time.monotonic() >= next_sample:
                line()
                next_sample += sample_s
    except KeyboardInterrupt:
        stop.set()
        print("interrupted: finishing the requests in flight", flush=True)
    for thread in threads:
        thread.join()
    line()
    rss_end = samples[-1] if samples else None
    report(tally, rss_start, max(samples) if samples else None, rss_end,
           rss_mib(pid, "VmHWM"), time.monotonic() - started)
    return 1 if sum(tally.errors.values()) else 0


def report(tally: Tally, rss_start: float | None, rss_peak: float | None,
           rss_end: float | None, rss_hwm: float | None, seconds: float) -> None:
    print(f"\n{'kind':<14} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8}  statuses")
    for kind in KINDS:
        latencies = tally.latencies.get(kind, [])
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses[kind].items()))
        print(f"{kind:<14} {len(latencies):8d} {tally.errors[kind]:6d} "
              f"{percentile(latencies, 0.5) * 1000:8.1f} {percentile(latencies, 0.99) * 1000:8.1f}"
              f"  {statuses}")
    total, errors = tally.total()
    print(f"{'all':<14} {total:8d} {errors:6d}  in {seconds:.0f} s ({total / seconds:.1f} req/s)")

    def mib(value: float | None) -> str:
        return f"{value:.0f} MiB" if value is not None else "n/a"

    print(f"gateway RSS: start {mib(rss_start)}, peak sampled {mib(rss_peak)}, end {mib(rss_end)}"
          f" (process peak since start {mib(rss_hwm)})")
    if tally.examples:
        print("errors (first 20):")
        for example in tally.examples:
            print(f"  {example}")


def print_tracebacks(log_path: Path, limit: int = 5) -> None:
    """The last lines of the gateway's logged exceptions."""
    shown = 0
    for text in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("exc") and shown < limit:
            print(f"  gateway: {record['exc'].strip().splitlines()[-1]}")
            shown += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--url", help="a running gateway's REST URL (default: start one)")
    parser.add_argument("--grpc", help="its gRPC host:port (with --url)")
    parser.add_argument("--pid", type=int, help="its process id, for memory (with --url; "
                                                "default: found from the listening port)")
    parser.add_argument("--sample-s", type=float, default=30.0, help="memory sample period")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.url:
        if not args.grpc:
            parser.error("--url needs --grpc too")
        port = httpx.URL(args.url).port
        pid = args.pid or (pid_listening_on(port) if port else None)
        if pid is None:
            print("the gateway's process is not visible here: memory is not measured")
        return soak(args.url, args.grpc, pid, args.minutes, args.workers, args.sample_s,
                    args.seed)
    log_path = Path(tempfile.mkdtemp(prefix="facepose-soak-")) / "gateway.log"
    print(f"starting a gateway (log: {log_path})", flush=True)
    with gateway({"FACEPOSE_MAX_IN_FLIGHT_REQUESTS": "64"}, log_path) as (url, target, pid):
        print(f"gateway pid {pid}: REST {url}, gRPC {target}", flush=True)
        status = soak(url, target, pid, args.minutes, args.workers, args.sample_s, args.seed)
    if status:
        print_tracebacks(log_path)
    return status


if __name__ == "__main__":
    sys.exit(main())
