"""Structured logs: one JSON object per line, with the request id where there is one.

Never log request bodies, images or faces: only what describes the request.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

LOGGER = logging.getLogger("facepose")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Attributes every LogRecord has; anything else was passed in `extra` and is logged.
# uvicorn adds an ANSI-coloured copy of its message, which JSON readers do not want.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for our logs and uvicorn's."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level)
    # Each request is logged once, by us, with its id; uvicorn's access line would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


def request_id_from(header: str | None) -> str:
    """The client's id when it is a sane token, else a new one."""
    if header and _REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


def log_request(request_id: str, transport: str, method: str, route: str, status: str,
                seconds: float) -> None:
    LOGGER.info("request", extra={
        "request_id": request_id, "transport": transport, "method": method, "route": route,
        "status": status, "duration_ms": round(seconds * 1000, 2)})
