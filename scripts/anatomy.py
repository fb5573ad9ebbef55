"""Where a request's CPU goes: each part's CPU per image, in process and through the gateway.

    python scripts/anatomy.py [--photos DIR] [--count 100] [--runtime embedded|triton]
                              [--concurrency 1 8] [--requests 200] [--env NAME=VALUE ...]

Each part is a function of the request path, timed in the thread that runs it with the thread's
own CPU clock, without the parts it calls (those count as theirs). What no part holds is counted
by thread: the event loop's thread (HTTP, FastAPI, the request flow, the batcher), the Python
worker threads (the pipeline's own code between the parts) and the native threads (the
runtimes' and gRPC's). The rows add up to the process's CPU per image.

In process: ``service.clients.local.FacePose`` (decode, pipeline, results, JSON as the gateway
makes them), one photo at a time. Through the gateway: a gateway started by this script with the
same timers (and the settings ``--env`` gives it: a lever to try), sent the photos over REST at
each concurrency. With ``--runtime triton`` the models
run in a local Triton, whose CPU is printed apart: the gateway's rows are what a GPU node's
gateway cores pay.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import DEV_LARGE, missing_data_message

REPO = Path(__file__).resolve().parent.parent
# (part, module, function): the request path's parts, in the order a request meets them.
PARTS = (
    ("header check", "service.app.images", "plan_decodes"),
    ("image decode", "service.pipeline.decode", "decode_pixels"),
    ("letterbox and tiles (resize)", "service.pipeline.detect", "letterbox"),
    ("letterbox and tiles (resize)", "service.pipeline.detect", "_level_image"),
    ("detector post-processing", "service.pipeline.detect", "decode_boxes"),
    ("detector post-processing", "service.pipeline.detect", "weighted_nms"),
    ("detector post-processing", "service.pipeline.detect", "merge_detections"),
    ("detector post-processing", "service.pipeline.detect", "drop_enclosing_boxes"),
    ("detector post-processing", "service.pipeline.detect", "keep_tile_detections"),
    ("crops (and points back)", "service.pipeline.align", "crop_regions"),
    ("crops (and points back)", "service.pipeline.align", "crop_points_to_image"),
    ("model inference (embedded)", "onnxruntime", "InferenceSession.run"),
    ("model inference (embedded)", "service.runtime.embedded", "LiteRTModel.run"),
    ("model calls: runtime client (Triton: tensors to and from the wire)",
     "service.runtime.embedded", "EmbeddedRuntime.infer"),
    ("model calls: runtime client (Triton: tensors to and from the wire)",
     "service.runtime.triton", "TritonRuntime.infer"),
    ("PnP", "service.pipeline.solve", "solve_pose"),
    ("PnP", "service.pipeline.solve", "pose_with_rotation"),
    ("uncertainty", "service.pipeline.uncertainty", "uncertainty_deg"),
    ("mesh in mm", "service.pipeline.solve", "mesh_in_camera_mm"),
    ("results (rounding)", "service.app.results", "face_output"),
    ("JSON", "service.http.serialize", "images_dict"),
    ("JSON", "service.http.responses", "JSONResponse.render"),
)
EVENT_LOOP = "main thread's own: event loop (HTTP, FastAPI, flow, batcher); in process: pipeline"
WORKERS = "worker threads: pipeline code between the parts"
NATIVE = "native threads: runtime and gRPC internals"


class Timers:
    """Exclusive thread-CPU seconds per part, all threads together."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.in_main_thread = 0.0  # of all parts' seconds, those spent in the main thread
        self._lock = threading.Lock()
        self._stack = threading.local()

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        stack: list[list[float]] = self._stack.__dict__.setdefault("frames", [])
        frame = [time.thread_time(), 0.0]  # started, time of the parts it called
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()
            spent = time.thread_time() - frame[0]
            if stack:
                stack[-1][1] += spent
            with self._lock:
                self.seconds[name] += spent - frame[1]
                if threading.current_thread() is threading.main_thread():
                    self.in_main_thread += spent - frame[1]

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return function(*args, **kwargs)
        timed.__wrapped__ = function  # type: ignore[attr-defined]
        return timed


def install(timers: Timers) -> None:
    """Every part's function replaced by its timed one, wherever a loaded module of the
    service holds it (an ``import`` copies the name into each module that uses it). Before the
    runtime is made: it keeps its models' bound ``run`` methods."""
    import importlib

    for _, module_name, _ in PARTS:
        importlib.import_module(module_name)
    for name, module_name, qualified in PARTS:
        module = sys.modules[module_name]
        if "." in qualified:
            owner_name, attribute = qualified.split(".")
            owner = getattr(module, owner_name)
            setattr(owner, attribute, timers.wrap(name, getattr(owner, attribute)))
            continue
        original = getattr(module, qualified)
        timed = timers.wrap(name, original)
        for loaded in list(sys.modules.values()):
            if getattr(loaded, "__name__", "").startswith("service") and \
                    getattr(loaded, qualified, None) is original:
                setattr(loaded, qualified, timed)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads so far, by kind."""
    ticks = os.sysconf("SC_CLK_TCK")
    python = {t.native_id: t for t in threading.enumerate()}
    main_id = threading.main_thread().native_id
    by_kind: defaultdict[str, float] = defaultdict(float)
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / ticks
        tid = int(task.name)
        kind = EVENT_LOOP if tid == main_id else WORKERS if tid in python else NATIVE
        by_kind[kind] += seconds
    return dict(by_kind)


def snapshot(timers: Timers) -> dict[str, Any]:
    return {"parts": dict(timers.seconds), "in_main_thread": timers.in_main_thread,
            "threads": thread_cpu()}


def anatomy(before: dict[str, Any], after: dict[str, Any], images: int) -> dict[str, float]:
    """ms per image by part; the threads' CPU that no part holds goes to its thread's kind."""
    parts = {name: after["parts"].get(name, 0.0) - before["parts"].get(name, 0.0)
             for name in {*after["parts"], *before["parts"]}}
    threads = {kind: after["threads"].get(kind, 0.0) - before["threads"].get(kind, 0.0)
               for kind in (EVENT_LOOP, WORKERS, NATIVE)}
    # What is left of a thread's CPU once its parts are taken out is its own code. Thread
    # clocks tick in 1/100 s: over hundreds of images that rounds away.
    in_main = after["in_main_thread"] - before["in_main_thread"]
    rows = {name: 1000 * seconds / images for name, seconds in parts.items()}
    rows[EVENT_LOOP] = 1000 * (threads[EVENT_LOOP] - in_main) / images
    rows[WORKERS] = 1000 * (threads[WORKERS] - (sum(parts.values()) - in_main)) / images
    rows[NATIVE] = 1000 * threads[NATIVE] / images
    return rows


# --- The gateway with timers: this script run as `--serve` --------------------------------

def serve(dump_path: Path) -> int:
    """A gateway (`facepose serve`, settings from the environment) with the timers installed;
    SIGUSR1 writes what they hold to ``dump_path``."""
    timers = Timers()
    import service.gateway  # noqa: F401  (loads every module a request passes)

    install(timers)

    def dump(*_: Any) -> None:
        dump_path.write_text(json.dumps(snapshot(timers)))

    signal.signal(signal.SIGUSR1, dump)
    from service.cli import main as cli_main

    return cli_main(["serve"])


def through_gateway(photos: list[bytes], concurrencies: list[int], requests: int,
                    env: dict[str, str]) -> dict[str, dict[str, float]]:
    import tempfile

    from bench import gateway

    columns = {}
    with tempfile.TemporaryDirectory() as scratch:
        dump_path = Path(scratch) / "timers.json"
        with gateway(env, command=[sys.executable, __file__, "--serve", str(dump_path)]
                     ) as (url, _, pid):
            http = httpx.Client(base_url=url, timeout=120,
                                limits=httpx.Limits(max_connections=256))

            def send(k: int) -> None:
                http.post("/v1/faces", content=photos[k % len(photos)],
                          headers={"Content-Type": "image/jpeg"}).raise_for_status()

            def read_timers() -> dict[str, Any]:
                dump_path.unlink(missing_ok=True)
                os.kill(pid, signal.SIGUSR1)
                while not dump_path.exists() or not dump_path.stat().st_size:
                    time.sleep(0.01)
                time.sleep(0.05)
                return json.loads(dump_path.read_text())

            for k in range(len(photos)):  # warm-up
                send(k)
            for concurrency in concurrencies:
                before = read_timers()
                with ThreadPoolExecutor(concurrency) as pool:
                    list(pool.map(send, range(requests)))
                columns[f"REST c{concurrency}"] = anatomy(before, read_timers(), requests)
            http.close()
    return columns


def in_process(photos: list[bytes]) -> dict[str, float]:
    from service.clients.local import FacePose
    from service.http.responses import JSONResponse

    timers = Timers()
    install(timers)  # first: the runtime holds the functions it will call
    with FacePose() as facepose:
        for photo in photos[:10]:  # warm-up
            facepose.estimate([photo])
        before = snapshot(timers)
        for photo in photos:
            # The JSON bytes too, as the gateway sends them.
            JSONResponse(facepose.estimate([photo]))
        return anatomy(before, snapshot(timers), len(photos))


def print_table(columns: dict[str, dict[str, float]], extra: dict[str, dict[str, float]]
                ) -> None:
    names = list(dict.fromkeys(name for name, _, _ in PARTS))
    names += [EVENT_LOOP, WORKERS, NATIVE]
    print("| part, CPU ms per image | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{column.get(name, 0.0):.2f}"
                                          for column in columns.values()) + " |")
    print("| **gateway total** | " + " | ".join(f"**{sum(c.values()):.2f}**"
                                                for c in columns.values()) + " |")
    for name, values in extra.items():
        print(f"| {name} | " + " | ".join(f"{values.get(c, float('nan')):.2f}"
                                          for c in columns) + " |")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        return serve(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=DEV_LARGE)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--runtime", choices=("embedded", "triton"), default="embedded")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="gateway settings, e.g. FACEPOSE_BATCH_MAX_WAIT_MS=5")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.env)
    missing = missing_data_message("anatomy", args.photos, labels=False)
    if missing is not None:
        print(missing, file=sys.stderr)
        return 2
    paths = sorted((args.photos / "images").glob("*.jpg"))[: args.count]
    photos = [path.read_bytes() for path in paths]
    columns: dict[str, dict[str, float]] = {}
    extra: dict[str, dict[str, float]] = {}
    if args.runtime == "embedded":
        columns["in process"] = in_process(photos)
        columns.update(through_gateway(photos, args.concurrency, args.requests,
                                       {"FACEPOSE_RUNTIME": "embedded", **settings}))
    else:
        from bench import free_port, process_tree_cpu

        from service.triton_local.server import LocalTriton

        with LocalTriton(REPO / "model_repository", REPO / ".triton", free_port(),
                         free_port(), free_port()) as triton:
            assert triton.process is not None
            pid = triton.process.pid
            http = settings.get("FACEPOSE_TRITON_PROTOCOL") == "http"
            env = {"FACEPOSE_RUNTIME": "triton", "FACEPOSE_TRITON_URL": (
                f"{triton.address}:{triton.http_port}" if http else triton.grpc_url), **settings}
            extra["Triton (apart)"] = {}
            for concurrency in args.concurrency:
                started = process_tree_cpu(pid)
                columns.update(through_gateway(photos, [concurrency], args.requests, env))
                # Triton's CPU over the whole column's run, warm-up included: an upper bound.
                extra["Triton (apart)"][f"REST c{concurrency}"] = (
                    1000 * (process_tree_cpu(pid) - started) / (args.requests + len(photos)))
    print(f"{len(photos)} photos from {args.photos}, {args.runtime} runtime, "
          f"{args.requests} requests a column" + (f", {' '.join(args.env)}" if args.env else "")
          + "\n")
    print_table(columns, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
