"""The HTTP answers every route shares: JSON by orjson, refusals in the one error shape, and the
error statuses as the OpenAPI document describes them."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse

from service import errors
from service.api import schemas
from service.app.refusals import Refusal

# Statuses the router itself answers, with their codes.
ROUTING_CODES = {404: "not_found", 405: "method_not_allowed"}


class JSONResponse(StarletteJSONResponse):
    """orjson: several times faster than json on the large float arrays of meshes."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def refusal_response(refusal: Refusal) -> JSONResponse:
    return JSONResponse(refusal.body, status_code=refusal.status, headers=refusal.headers)


def _error_types(base: type[errors.FaceposeError]) -> list[type[errors.FaceposeError]]:
    return [base, *(t for sub in base.__subclasses__() for t in _error_types(sub))]


def error_responses() -> dict[int | str, dict[str, Any]]:
    """Each error status a request route can answer, with the codes it can carry."""
    codes: dict[int, set[str]] = {}
    for error_type in _error_types(errors.FaceposeError):
        codes.setdefault(error_type.status, set()).add(error_type.code)
    # 408 is a stream's alone (it closes a WebSocket, never answers a request).
    codes.pop(408, None)
    return {status: {"model": schemas.ErrorResponse,
                     "description": "`error.code` is one of: "
                                    + ", ".join(f"`{code}`" for code in sorted(codes[status]))}
            for status in sorted(codes)}


ERROR_RESPONSES = error_responses()
