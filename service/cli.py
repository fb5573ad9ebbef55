"""The `facepose` command: build the models, serve the API."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from service.app.options import RequestOptions
from service.config import Quality, get_settings


def _models_build(args: argparse.Namespace) -> int:
    from service.model_build import ModelBuildError
    from service.model_build.build import build_models

    try:
        build_models(Path(args.repo), Path(args.cache) if args.cache else None,
                     force=args.force)
    except ModelBuildError as exc:
        print(f"model build failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve(args: argparse.Namespace) -> int:
    from service.gateway import create_gateway
    from service.http.connections import server_limits
    from service.logs import configure_logging

    settings = get_settings()
    configure_logging()
    app = create_gateway(settings)
    config = uvicorn.Config(app, host=args.host or settings.host, port=args.port or settings.port,
                            log_config=None, access_log=False,
                            timeout_graceful_shutdown=settings.shutdown_grace_s,
                            **server_limits(settings))
    # uvicorn re-raises the signal it stopped on, once it has shut down gracefully; with this
    # handler in place that is a no-op, so a drained SIGTERM exits 0 as orchestrators expect.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    server = DrainingServer(config, app, settings.drain_s)
    server.run()
    # A start that failed (a port taken, models missing) is logged by uvicorn; say so in the
    # exit status too, as uvicorn.run does.
    return 0 if server.started else 3


class DrainingServer(uvicorn.Server):
    """On SIGTERM, as a proxy drains: readiness fails at once, and for FACEPOSE_DRAIN_S every
    request is still answered, each response saying Connection: close, so that clients take
    their next request to a new connection, which the load balancer sends elsewhere. Then the
    listeners close (gRPC: GOAWAY), so do idle connections, and the requests in flight finish
    within FACEPOSE_SHUTDOWN_GRACE_S; a request that still arrives gets 503 shutting_down.
    SIGINT (a person at a terminal), or a second signal, skips the window."""

    def __init__(self, config: uvicorn.Config, app: Any, drain_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_s = drain_s
        self.drain_ends_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        core = self.app.state.core
        core.draining = True
        if sig == signal.SIGTERM and self.drain_ends_at is None and self.drain_s > 0:
            self.drain_ends_at = time.monotonic() + self.drain_s
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # Here, not in the signal handler: the event loop's own code starts the servers' stop.
        if (self.drain_ends_at is not None and not self.should_exit
                and time.monotonic() >= self.drain_ends_at):
            self.should_exit = True
        if self.should_exit:
            self.app.state.core.begin_stopping()
        return await super().on_tick(counter)


def _triton(args: argparse.Namespace) -> int:
    from service.triton_local.server import LocalTriton

    server = LocalTriton(Path(args.repo), Path(args.workdir), args.http_port, args.grpc_port,
                         args.metrics_port, args.address)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(f"tritonserver ready: gRPC {server.grpc_url}, HTTP {server.http_url}", flush=True)
    try:
        while not stop.is_set() and server.process is not None and server.process.poll() is None:
            stop.wait(0.5)
    finally:
        server.stop()
    return 0


def _batch(args: argparse.Namespace) -> int:
    from service.clients.batch import NothingToDo, run_batch
    from service.clients.remote import grpc_options
    from service.endpoints import parse_servers

    try:
        parse_servers(args.server)
    except ValueError as error:
        print(f"--server: {error}", file=sys.stderr)
        return 2
    include = [name for name in args.include.split(",") if name]
    options = grpc_options(include, max_faces=args.max_faces, min_score=args.min_score,
                           min_presence=args.min_presence, quality=args.quality)
    try:
        summary = run_batch(args.source, args.server, Path(args.out), options,
                            args.concurrency, args.retries)
    except NothingToDo as error:
        print(f"facepose batch: {error}", file=sys.stderr)
        return 2
    print(summary.line())
    if summary.stopped is None:
        return 0
    print("re-run the same command to go on where it stopped", file=sys.stderr)
    return 130 if summary.stopped == "interrupted" else 1


def _estimate(args: argparse.Namespace) -> int:
    import json

    from service.clients.local import FacePose
    from service.clients.remote import UNREADABLE_FILE
    from service.errors import FaceposeError
    from service.http.body import checked_boxes, parse_boxes_json
    from service.wire import failed_image_entry

    options = {name: value for name in OPTION_FLAGS
               if (value := getattr(args, name)) is not None}
    paths = [Path(path) for path in args.paths]
    entries: list[dict[str, Any]] = []
    try:
        boxes = (None if args.boxes is None
                 else checked_boxes(parse_boxes_json(args.boxes), len(paths), sys.maxsize))
        with FacePose() as facepose:
            for index, path in enumerate(paths):
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    entry = failed_image_entry(index, UNREADABLE_FILE,
                                               f"{path}: {exc.strerror}")
                else:
                    (entry,) = facepose.estimate(
                        [data], None if boxes is None else [boxes[index]], **options)["images"]
                    entry["index"] = index
                    if args.render and entry["error"] is None:
                        out = (Path(args.render) if len(paths) == 1
                               else Path(args.render) / f"{path.stem}.jpg")
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(facepose.render(data, **options))
                entries.append(entry)
                if len(paths) > 1:
                    found = (f"error {entry['error']['code']}" if entry["error"]
                             else f"{len(entry['faces'])} faces")
                    print(f"[{index + 1}/{len(paths)}] {path}: {found}", file=sys.stderr)
    except FaceposeError as exc:  # an option or the number of paths refused
        print(f"facepose estimate: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps({"images": entries}))
    return 0 if any(entry["error"] is None for entry in entries) else 1


# `facepose estimate` takes each /v1/faces query parameter as a flag of the same name.
OPTION_FLAGS = tuple(name for name in RequestOptions.model_fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facepose", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="model repository tasks")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    build = model_commands.add_parser(
        "build", help="fetch, convert and verify the models (no-op when up to date)"
    )
    build.add_argument("--repo", default=str(get_settings().model_repository))
    build.add_argument("--cache", default=os.environ.get("FACEPOSE_CACHE_DIR"))
    build.add_argument("--force", action="store_true")
    build.set_defaults(handler=_models_build)

    serve = commands.add_parser("serve", help="run the REST gateway")
    serve.add_argument("--host", default=None, help="default FACEPOSE_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default FACEPOSE_PORT or 8080")
    serve.set_defaults(handler=_serve)

    triton = commands.add_parser(
        "triton", help="run a local Triton server (CPU, python backend) until interrupted")
    triton.add_argument("--repo", default=str(get_settings().model_repository))
    triton.add_argument("--workdir", default=".triton", help="server files and its log")
    triton.add_argument("--address", default="127.0.0.1")
    triton.add_argument("--http-port", type=int, default=8000)
    triton.add_argument("--grpc-port", type=int, default=8001)
    triton.add_argument("--metrics-port", type=int, default=8002)
    triton.set_defaults(handler=_triton)

    batch = commands.add_parser(
        "batch", help="estimate every image of a folder, glob or list file into JSON lines")
    batch.add_argument("source", help="a folder (recursive), a glob, or a text file of paths")
    batch.add_argument("--server", default="127.0.0.1:50051",
                       help="gRPC host:port; several comma-separated, or a name with several "
                            "addresses (a headless Service): one stream to each")
    batch.add_argument("--out", required=True, help="JSON lines; re-running resumes it")
    batch.add_argument("--concurrency", type=int, default=16, help="images in flight")
    batch.add_argument("--include", default="", help="e.g. landmarks68,mesh")
    batch.add_argument("--max-faces", type=int, default=None)
    batch.add_argument("--min-score", type=float, default=None)
    batch.add_argument("--min-presence", type=float, default=None)
    batch.add_argument("--quality", choices=[q.value for q in Quality], default=None,
                       help="the preset; default the server's")
    batch.add_argument("--retries", type=int, default=6,
                       help="tries in a row without progress before giving up")
    batch.set_defaults(handler=_batch)

    estimate = commands.add_parser(
        "estimate", help="estimate images in this process (no server) and print the "
                         "/v1/faces JSON")
    estimate.add_argument("paths", nargs="+", help="image files")
    for name, field in RequestOptions.model_fields.items():
        estimate.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                              help=field.description)
    estimate.add_argument("--boxes", default=None,
                          help="JSON, per path a list of [x1, y1, x2, y2] face boxes in pixels "
                               "(or null: the detector), as /v1/faces's boxes")
    estimate.add_argument("--render", default=None,
                          help="also write the overlay: a file for one path, else a folder "
                               "of <name>.jpg")
    estimate.set_defaults(handler=_estimate)

    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
