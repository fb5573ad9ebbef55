"""Tracking against per-frame detection on the same synthetic video (tests/video.py).

    python scripts/bench_tracking.py [--frames 300] [--no-gateway] [--streams 1 8]

In process, one frame at a time, JPEG decode included: `/v1/faces`'s pipeline on every frame,
then the stream tracker with the detector on every frame and every 10th frame. Then end to
end against a local gateway: `POST /v1/faces` per frame against `/v1/stream`, each frame sent
once the last one is answered; then that many WebSocket streams at once (``--streams``), each
sending the video. Prints frames/s (all streams together) and per-frame latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import gateway, model_traffic

from service.app.images import EncodedImages, decode_request_images
from service.app.options import options_model
from service.app.streams import FrameIn, InThread, StreamSession, parse_config
from service.config import Settings
from service.pipeline.estimate import estimate_faces
from service.runtime import create_runtime
from service.runtime.base import InferenceRuntime
from tests.video import Video, synthetic_video

Row = tuple[str, float, float, float, int]  # mode, frames/s, p50 ms, p95 ms, detector runs


class CountingRuntime:
    def __init__(self, runtime: InferenceRuntime) -> None:
        self.runtime, self.specs, self.detector_runs = runtime, runtime.specs, 0

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.detector_runs += model == "face_detector_short"
        return self.runtime.infer(model, inputs)

    def is_ready(self) -> bool:
        return True

    def close(self) -> None:
        self.runtime.close()


def timed(mode: str, frames: list[bytes], handle: Callable[[int, bytes], None],
          detector_runs: Callable[[], int]) -> Row:
    handle(0, frames[0])  # warm-up, not counted
    before = detector_runs()
    latencies = []
    started = time.perf_counter()
    for k, data in enumerate(frames):
        tick = time.perf_counter()
        handle(k, data)
        latencies.append(time.perf_counter() - tick)
    total = time.perf_counter() - started
    p50, p95 = np.percentile(latencies, [50, 95]) * 1000
    return mode, len(frames) / total, float(p50), float(p95), detector_runs() - before


def in_process(video: Video) -> list[Row]:
    settings = Settings()
    runtime = CountingRuntime(create_runtime(settings))
    options = options_model(settings)()
    engine = InThread(runtime)
    loop = asyncio.new_event_loop()  # one for all frames, as a server's

    def detect_each(k: int, data: bytes) -> None:
        (decoded,) = decode_request_images(settings, EncodedImages([data], whole=True),
                                           options)
        assert decoded.request is not None
        estimate_faces(runtime, [decoded.request])

    rows = [timed("in process: /v1/faces pipeline per frame", video.encoded, detect_each,
                  lambda: runtime.detector_runs)]
    for detect_every in (1, 10):
        session = StreamSession(settings, parse_config(settings, {"detect_every": detect_every}),
                                "bench")

        def track(k: int, data: bytes, session: StreamSession = session) -> None:
            # No timestamps: the session spaces frames 1/30 s apart.
            loop.run_until_complete(session.process(FrameIn(data), engine))

        rows.append(timed(f"in process: tracking, detector every {detect_every} frame"
                          f"{'s' if detect_every > 1 else ''}", video.encoded, track,
                          lambda: runtime.detector_runs))
    loop.close()
    runtime.close()
    return rows


def end_to_end(video: Video) -> list[Row]:
    rows = []
    with gateway({}) as (url, _, _), httpx.Client(base_url=url, timeout=60) as client:
        posted = [0]

        def post(k: int, data: bytes) -> None:
            response = client.post("/v1/faces", content=data,
                                   headers={"Content-Type": "image/jpeg"})
            response.raise_for_status()
            posted[0] += 1

        rows.append(timed("gateway: POST /v1/faces per frame", video.encoded, post,
                          lambda: posted[0]))
        ws = websocket.create_connection(url.replace("http://", "ws://") + "/v1/stream")
        detected = [0]

        def stream(k: int, data: bytes) -> None:
            ws.send(json.dumps({"type": "frame", "image": base64.b64encode(data).decode()}))
            answer = json.loads(ws.recv())
            assert answer["error"] is None, answer["error"]
            detected[0] += answer["detected"]

        rows.append(timed("gateway: WebSocket /v1/stream, detector every 10 frames",
                          video.encoded, stream, lambda: detected[0]))
        ws.close()
    return rows


def stream_video(url: str, frames: list[bytes], latencies: list[float],
                 detected: list[int]) -> None:
    """One WebSocket client sending ``frames``, each once the last one is answered."""
    ws = websocket.create_connection(url.replace("http://", "ws://") + "/v1/stream")
    try:
        for data in frames:
            tick = time.perf_counter()
            ws.send(json.dumps({"type": "frame", "image": base64.b64encode(data).decode()}))
            answer = json.loads(ws.recv())
            latencies.append(time.perf_counter() - tick)
            assert answer["error"] is None, answer["error"]
            detected.append(int(answer["detected"]))
    finally:
        ws.close()


def concurrent_streams(video: Video, counts: list[int]) -> list[Row]:
    """``count`` WebSocket streams at once against one gateway, each sending the whole video;
    prints the model calls a frame took (fewer where streams share them)."""
    rows = []
    with gateway({}) as (url, _, _):
        stream_video(url, video.encoded[:10], [], [])  # warm-up, not counted
        for count in counts:
            latencies: list[list[float]] = [[] for _ in range(count)]
            detected: list[list[int]] = [[] for _ in range(count)]
            clients = [threading.Thread(target=stream_video,
                                        args=(url, video.encoded, latencies[k], detected[k]))
                       for k in range(count)]
            calls_before, _ = model_traffic(url)
            started = time.perf_counter()
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            total = time.perf_counter() - started
            every = [s for per_stream in latencies for s in per_stream]
            if len(every) != count * len(video.encoded):
                raise RuntimeError("a stream ended early; see the assertion above")
            calls = (model_traffic(url)[0] - calls_before) / len(every)
            print(f"{count} stream{'s' if count > 1 else ''} at once: {calls:.2f} model calls "
                  "a frame")
            p50, p95 = np.percentile(every, [50, 95]) * 1000
            rows.append((f"gateway: {count} WebSocket stream{'s' if count > 1 else ''} at "
                         "once, detector every 10 frames", len(every) / total, float(p50),
                         float(p95), sum(map(sum, detected))))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--no-gateway", action="store_true", help="in-process rows only")
    parser.add_argument("--streams", type=int, nargs="*", default=[1, 8],
                        help="concurrent WebSocket streams, one row each (none: no rows)")
    args = parser.parse_args()
    video = synthetic_video(frames=args.frames)
    rows = in_process(video)
    if not args.no_gateway:
        rows += end_to_end(video)
        rows += concurrent_streams(video, args.streams)
    print(f"{args.frames} frames, 640x480 JPEG, one face, one frame at a time\n")
    print("| mode | frames/s | p50 ms | p95 ms | detector runs |")
    print("| --- | --- | --- | --- | --- |")
    for mode, fps, p50, p95, runs in rows:
        print(f"| {mode} | {fps:.1f} | {p50:.2f} | {p95:.2f} | {runs} |")
    base = rows[0][1]
    print("\nspeed-up of tracking every 10th frame in process: "
          f"{rows[2][1] / base:.2f}x; median latency {rows[0][2] / rows[2][2]:.2f}x lower")
    if len(rows) > 3:
        print(f"end to end: {rows[4][1] / rows[3][1]:.2f}x the frames/s of POST per frame")
    if len(rows) > 6:
        print(f"{args.streams[-1]} streams at once: {rows[-1][1] / rows[5][1]:.2f}x the frames/s "
              "of one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
