"""WebSocket transport for video streams: ``/v1/stream``.

The client sends an optional ``config`` message, then frames (JSON with a base64 image, or
binary: a 4-byte big-endian header length, a JSON header, the encoded image), then ``end``;
the service answers every frame, in order, with the faces it tracks. README ("Video streams")
documents the messages; the pydantic models below are their schemas.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from typing import Any, Literal

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError

from service.app.auth import check_key, presented_key
from service.app.core import Core
from service.app.options import problems_of
from service.app.refusals import refusal_for
from service.app.streams import (
    MAX_FRAME_ID_CHARS,
    ConfigAck,
    ConfigIn,
    EndIn,
    FrameDone,
    FrameId,
    FrameIn,
    Incoming,
    Outgoing,
    StreamConfig,
    StreamEnd,
    StreamRunner,
    stream_config_model,
)
from service.config import Settings
from service.errors import (
    BadOption,
    BadRequestBody,
    FaceposeError,
    ImageTooLarge,
    ProtocolError,
    StreamIdle,
)
from service.http.responses import refusal_response
from service.http.schemas import CameraOut, ErrorDetail, FaceOut
from service.http.serialize import error_dict, frame_dict
from service.logs import LOGGER, log_request, request_id_from
from service.metrics import (
    HTTP_RESPONSES,
    REQUESTS,
    WEBSOCKET_CLOSES,
    Outcome,
    outcome_of_status,
)

ROUTE = "/v1/stream"
# Close codes: 1000 the stream ended (after `end`), 1008 protocol misuse or a bad config,
# 1011 an internal error, 4408 idle too long. 1009 (a message over uvicorn's 16 MiB) and 1012
# (the server restarting) come from the server itself.
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_IDLE = 1000, 1008, 1011, 4408
# Refusals before the handshake completes, where the server cannot send an HTTP response.
CLOSE_FOR_STATUS = {401: 4401, 429: 1013}
# The close codes this server ends a stream with, as outcomes; any other is the client's own
# close (1006: it left without one).
CLOSE_OUTCOMES = {CLOSE_POLICY: Outcome.CLIENT_ERROR, CLOSE_INTERNAL: Outcome.SERVER_ERROR,
                  CLOSE_IDLE: Outcome.TIMEOUT, 1006: Outcome.CANCELLED}
# Close reasons are limited to 123 bytes by the protocol.
MAX_REASON_BYTES = 123
MAX_HEADER_BYTES = 64 * 1024


class ConfigMessage(BaseModel):
    type: Literal["config"]
    config: StreamConfig = Field(default_factory=StreamConfig)


class FrameMessage(BaseModel):
    type: Literal["frame"]
    id: str | int | None = Field(default=None, description="Echoed in the answer.")
    timestamp_ms: float | None = Field(
        default=None, description="Capture time, increasing; without it frames are 1/fps apart.")
    image: str = Field(description="The encoded image (JPEG, PNG or WebP), base64.")


class BinaryFrameHeader(BaseModel):
    """The JSON header of a binary frame (may be empty: zero length)."""

    id: str | int | None = None
    timestamp_ms: float | None = None


class EndMessage(BaseModel):
    type: Literal["end"]


class ConfigAckMessage(BaseModel):
    type: Literal["config"] = "config"
    config: StreamConfig = Field(description="Every setting in force, defaults filled in.")


class EndAckMessage(BaseModel):
    type: Literal["end"] = "end"
    frames: int = Field(description="Frames answered in this stream.")


class TrackedFaceOut(FaceOut):
    track_id: int = Field(description="The same for a face in every frame while it is in view.")


class StreamFrameOut(BaseModel):
    """The answer to one frame (the `frame` message the service sends)."""

    type: Literal["frame"] = "frame"
    id: str | int | None = Field(description="The client's frame id, echoed.")
    frame: int = Field(description="Position of the frame in the stream, from 0.")
    timestamp_ms: float | None = Field(description="The frame's time: the client's, or "
                                                   "derived from fps.")
    width: int | None
    height: int | None
    camera: CameraOut | None
    detected: bool = Field(description="Whether the face detector ran on this frame.")
    faces: list[TrackedFaceOut]
    error: ErrorDetail | None = Field(description="Set when this frame failed; the stream goes "
                                                  "on.")


class StreamErrorMessage(BaseModel):
    """Sent just before the service closes a stream for a stream-level error."""

    type: Literal["error"] = "error"
    error: ErrorDetail


def _frame_id(value: Any) -> FrameId:
    """The client's id if it is one we can echo, for the answer to a frame that failed."""
    if isinstance(value, str) and len(value) <= MAX_FRAME_ID_CHARS:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _checked_id(frame: FrameIn) -> FrameIn:
    if isinstance(frame.frame_id, str) and len(frame.frame_id) > MAX_FRAME_ID_CHARS:
        return FrameIn(b"", error=BadRequestBody(
            f"id: at most {MAX_FRAME_ID_CHARS} characters"))
    return frame


def json_frame(payload: dict[str, Any], settings: Settings) -> FrameIn:
    """A JSON frame message; what is wrong with it becomes the frame's error."""
    try:
        message = FrameMessage.model_validate(payload)
    except ValidationError as exc:
        return FrameIn(b"", frame_id=_frame_id(payload.get("id")),
                       error=BadRequestBody(f"frame: {problems_of(exc.errors())}"))
    # Base64 holds 3 bytes in 4 characters: refuse before decoding what cannot fit the limit.
    if len(message.image) > (settings.max_image_bytes + 2) // 3 * 4 + 4:
        return FrameIn(b"", message.timestamp_ms, message.id, ImageTooLarge(
            f"the image exceeds {settings.max_image_bytes} bytes"))
    try:
        data = base64.b64decode(message.image, validate=True)
    except (binascii.Error, ValueError):
        return FrameIn(b"", message.timestamp_ms, message.id,
                       BadRequestBody("image: not valid base64"))
    return _checked_id(FrameIn(data, message.timestamp_ms, message.id))


def binary_frame(data: bytes) -> FrameIn:
    """A binary frame: 4-byte big-endian header length, JSON header, encoded image."""
    if len(data) < 4:
        return FrameIn(b"", error=BadRequestBody(
            "a binary frame starts with a 4-byte big-endian header length"))
    length = int.from_bytes(data[:4], "big")
    if length > min(len(data) - 4, MAX_HEADER_BYTES):
        return FrameIn(b"", error=BadRequestBody(
            f"binary frame: header length {length} exceeds the message or "
            f"{MAX_HEADER_BYTES} bytes"))
    header: dict[str, Any] = {}
    if length:
        try:
            parsed = orjson.loads(data[4:4 + length])
        except orjson.JSONDecodeError:
            return FrameIn(b"", error=BadRequestBody("binary frame: the header is not JSON"))
        if not isinstance(parsed, dict):
            return FrameIn(b"", error=BadRequestBody(
                "binary frame: the header must be a JSON object"))
        header = parsed
    try:
        fields = BinaryFrameHeader.model_validate(header)
    except ValidationError as exc:
        return FrameIn(b"", frame_id=_frame_id(header.get("id")),
                       error=BadRequestBody(f"binary frame header: {problems_of(exc.errors())}"))
    return _checked_id(FrameIn(data[4 + length:], fields.timestamp_ms, fields.id))


async def receive_message(websocket: WebSocket, settings: Settings) -> Incoming:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    if message.get("bytes") is not None:
        return binary_frame(message["bytes"])
    try:
        payload = orjson.loads(message.get("text") or "")
    except orjson.JSONDecodeError:
        raise ProtocolError("a text message must be a JSON object") from None
    if not isinstance(payload, dict):
        raise ProtocolError("a text message must be a JSON object")
    kind = payload.get("type")
    if kind == "frame":
        return json_frame(payload, settings)
    if kind == "config":
        # Validated with the stream's other settings: a bad one is a bad_option.
        return ConfigIn(payload.get("config"))
    if kind == "end":
        return EndIn()
    raise ProtocolError(f"unknown message type {str(kind)[:40]!r}: send config, frame or end")


def _text(content: dict[str, Any]) -> str:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY).decode()


async def send_message(websocket: WebSocket, outgoing: Outgoing) -> None:
    if isinstance(outgoing, ConfigAck):
        content: dict[str, Any] = {"type": "config",
                                   "config": outgoing.config.model_dump(mode="json")}
    elif isinstance(outgoing, FrameDone):
        content = frame_dict(outgoing.outcome)
    else:
        assert isinstance(outgoing, StreamEnd)
        content = {"type": "end", "frames": outgoing.frames}
    await websocket.send_text(_text(content))


CLOSE_TIMEOUT_S = 5.0


async def close_with_error(websocket: WebSocket, code: int, error: FaceposeError) -> None:
    """Say why in an error message, then close with ``code``; the client may be gone, or
    reading nothing (then the server gives up after CLOSE_TIMEOUT_S)."""
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await websocket.send_text(_text({"type": "error", "error": error_dict(error)}))
            reason = f"{error.code}: {error.message}".encode()[:MAX_REASON_BYTES]
            await websocket.close(code, reason.decode(errors="ignore"))


async def refuse(websocket: WebSocket, error: FaceposeError, retry_after_s: int) -> None:
    """Refuse the upgrade with the HTTP status, headers and error body /v1/faces would give."""
    refusal = refusal_for(error, retry_after_s)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(refusal_response(refusal))
    else:
        await websocket.close(CLOSE_FOR_STATUS.get(refusal.status, CLOSE_POLICY),
                              refusal.reason[:MAX_REASON_BYTES])


def stream_router(core: Core) -> APIRouter:
    settings = core.settings
    router = APIRouter()
    config_model = stream_config_model(settings)

    async def serve(websocket: WebSocket) -> int:
        """Run the accepted stream to its end; the close code it ended with."""
        runner = StreamRunner(settings, core.batcher, core.memory, "websocket", config_model)

        async def receive() -> Incoming:
            return await receive_message(websocket, settings)

        async def send(outgoing: Outgoing) -> None:
            await send_message(websocket, outgoing)

        try:
            await runner.run(receive, send)
        except WebSocketDisconnect as gone:
            return gone.code
        except OSError:
            return 1006
        except StreamIdle as exc:
            await close_with_error(websocket, CLOSE_IDLE, exc)
            return CLOSE_IDLE
        except (ProtocolError, BadOption) as exc:
            await close_with_error(websocket, CLOSE_POLICY, exc)
            return CLOSE_POLICY
        except Exception as exc:
            LOGGER.error("unexpected error in a video stream", exc_info=exc)
            await close_with_error(websocket, CLOSE_INTERNAL,
                                   FaceposeError("internal error"))
            return CLOSE_INTERNAL
        with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
            await websocket.close(CLOSE_NORMAL)
        return CLOSE_NORMAL

    @router.websocket(ROUTE)
    async def stream(websocket: WebSocket) -> None:
        request_id = request_id_from(websocket.headers.get("x-request-id"))
        started = time.perf_counter()
        status, outcome = "refused", Outcome.SERVER_ERROR
        try:
            check_key(core.api_keys, presented_key(websocket.headers.get("authorization"),
                                          websocket.headers.get("x-api-key")))
            with core.stream("websocket"):
                await websocket.accept(headers=[(b"x-request-id", request_id.encode())])
                close_code = await serve(websocket)
            status, outcome = str(close_code), CLOSE_OUTCOMES.get(close_code, Outcome.OK)
            WEBSOCKET_CLOSES.labels(status).inc()
        except FaceposeError as exc:
            # The upgrade refused with an HTTP status, as /v1/faces would answer.
            status, outcome = str(exc.status), outcome_of_status(exc.status)
            HTTP_RESPONSES.labels(ROUTE, status).inc()
            await refuse(websocket, exc, settings.retry_after_s)
        finally:
            REQUESTS.labels(ROUTE, "websocket", outcome).inc()
            log_request(request_id, "websocket", "GET", ROUTE, status,
                        time.perf_counter() - started)

    return router
