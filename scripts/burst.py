"""A burst against one gateway, watching its resident memory: the burst of issue 16.

    python scripts/burst.py [--requests 256] [--concurrency 64] [--memory-limit-mb MB]
                            [--triton] [--env NAME=VALUE ...]

Starts a gateway of its own (`facepose serve`, the default settings but for what --env sets;
--memory-limit-mb: the in-flight budget a container with that memory limit gets, to size a
pod's limit; --triton: the Triton runtime, over a local CPU Triton started for it, as in the
gpu overlay),
warms it up, then sends --requests POST /v1/faces of one 1920x1080 JPEG (the astronaut upscaled
and centred), --concurrency at a time, each on its own connection. Samples the gateway's VmRSS
every 50 ms from /proc and prints: idle before, peak during, and 0.5, 2 and 5 s after the last
answer; and the answers by status. Exit status 1 if any answer was 5xx or a transport error.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
from skimage import data

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench import free_port, gateway  # noqa: E402

from service.app.admission import inflight_budget_mb  # noqa: E402
from service.triton_local.server import LocalTriton  # noqa: E402

AFTER_S = (0.5, 2.0, 5.0)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def frame_1080p() -> bytes:
    canvas = np.full((1080, 1920, 3), 120, np.uint8)
    face = cv2.resize(data.astronaut(), (1080, 1080), interpolation=cv2.INTER_CUBIC)
    canvas[:, 420:1500] = face
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


class Sampler(threading.Thread):
    """VmRSS of ``pid`` every 50 ms, with the time of each sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((time.monotonic(), rss_mb(self.pid)))
            time.sleep(0.05)

    def peak_between(self, start: float, end: float) -> float:
        return max(mb for at, mb in self.samples if start <= at <= end)

    def at(self, moment: float) -> float:
        return min(self.samples, key=lambda sample: abs(sample[0] - moment))[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--memory-limit-mb", type=int)
    parser.add_argument("--triton", action="store_true")
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for the gateway")
    args = parser.parse_args()
    env = {"FACEPOSE_MAX_IN_FLIGHT_REQUESTS": "64"}  # the service's default, not bench's
    if args.memory_limit_mb is not None:
        env["FACEPOSE_MAX_INFLIGHT_MB"] = str(inflight_budget_mb(None, args.memory_limit_mb))
    env.update(item.split("=", 1) for item in args.env)
    if not args.triton:
        return burst(args, env)
    with LocalTriton(REPO / "model_repository", REPO / ".triton", free_port(), free_port(),
                     free_port()) as triton:
        return burst(args, {"FACEPOSE_RUNTIME": "triton",
                            "FACEPOSE_TRITON_URL": triton.grpc_url, **env})


def burst(args: argparse.Namespace, env: dict[str, str]) -> int:
    jpeg = frame_1080p()
    with gateway(env) as (url, _, pid):
        def send(_: int) -> str:
            try:
                response = httpx.post(f"{url}/v1/faces", content=jpeg, timeout=120,
                                      headers={"Content-Type": "image/jpeg"})
            except httpx.TransportError as exc:
                return type(exc).__name__
            retry = "+Retry-After" if "retry-after" in response.headers else ""
            return f"{response.status_code}{retry}"

        for k in range(4):
            send(k)
        time.sleep(1.0)
        sampler = Sampler(pid)
        sampler.start()
        time.sleep(1.0)
        idle = rss_mb(pid)
        started = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            statuses = Counter(pool.map(send, range(args.requests)))
        ended = time.monotonic()
        time.sleep(max(AFTER_S) + 0.2)
        sampler.stopped.set()
        sampler.join()
    peak = sampler.peak_between(started, ended)
    print(f"burst: {args.requests} requests of a 1080p JPEG, {args.concurrency} at a time, "
          f"{ended - started:.1f} s")
    print(f"gateway env: {env}")
    print(f"{'RSS MB':<10}{'idle':>8}{'peak':>8}" + "".join(f"{f'+{s:g} s':>8}" for s in AFTER_S))
    print(f"{'':<10}{idle:>8.0f}{peak:>8.0f}"
          + "".join(f"{sampler.at(ended + s):>8.0f}" for s in AFTER_S))
    print("answers: " + ", ".join(f"{status} x{count}"
                                  for status, count in sorted(statuses.items())))
    if args.memory_limit_mb is not None:
        print(f"peak {peak:.0f} MB of the {args.memory_limit_mb} MB limit: "
              f"{args.memory_limit_mb - peak:.0f} MB to spare")
    bad = sum(count for status, count in statuses.items() if not status[:1].isdigit()
              or status.startswith("5"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
