"""A gateway process: the application core with its transports, REST and WebSocket always, gRPC
when ``FACEPOSE_GRPC_PORT`` is set. `facepose serve` runs what this builds."""

from __future__ import annotations

from fastapi import FastAPI

from service.app.core import Core
from service.config import Settings, get_settings
from service.grpc.server import GrpcServer
from service.http.rest import create_app


def create_gateway(settings: Settings | None = None) -> FastAPI:
    core = Core(settings or get_settings())
    if core.settings.grpc_port:
        core.attach(GrpcServer(core))
    return create_app(core)
