"""The `facepose` command: build the models, serve the API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from service.config import get_settings


def _models_build(args: argparse.Namespace) -> int:
    from service.models.build import build_models

    build_models(Path(args.repo), Path(args.cache) if args.cache else None, force=args.force)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.rest import create_app

    settings = get_settings()
    host = args.host or settings.host
    port = args.port or settings.port
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=10)
    return 0


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

    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
