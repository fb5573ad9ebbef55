"""The HTTP answers every route shares: JSON by orjson, refusals in the one error shape, and the
error statuses as the OpenAPI document describes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse as StarletteJSONResponse

from service import errors
from service.app.options import problems_of
from service.app.refusals import Refusal, refusal_for
from service.http import schemas

# Statuses the router itself answers, with their codes.
ROUTING_CODES = {error.status: error.code for error in (errors.NotFound, errors.MethodNotAllowed)}
# Errors no request route answers: a stream's idle close, and the router's own.
NOT_ROUTE_ERRORS = (errors.StreamIdle, errors.NotFound, errors.MethodNotAllowed)


class JSONResponse(StarletteJSONResponse):
    """orjson: several times faster than json on the large float arrays of meshes."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def refusal_response(refusal: Refusal) -> JSONResponse:
    return JSONResponse(refusal.body, status_code=refusal.status, headers=refusal.headers)


def error_responses() -> dict[int | str, dict[str, Any]]:
    """Each error status a request route can answer, with the codes it can carry."""
    codes: dict[int, set[str]] = {}
    for error_type in errors.error_types():
        if error_type not in NOT_ROUTE_ERRORS:
            codes.setdefault(error_type.status, set()).add(error_type.code)
    return {status: {"model": schemas.ErrorResponse,
                     "description": "`error.code` is one of: "
                                    + ", ".join(f"`{code}`" for code in sorted(codes[status]))}
            for status in sorted(codes)}


ERROR_RESPONSES = error_responses()


def install_refusals(app: FastAPI, retry_after_s: int
                     ) -> Callable[[errors.FaceposeError], JSONResponse]:
    """Every error of ``app`` answered in the one shape; returns the refusal function, for the
    middleware that refuses before any route runs."""

    def refusal(exc: errors.FaceposeError) -> JSONResponse:
        return refusal_response(refusal_for(exc, retry_after_s))

    async def facepose_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.FaceposeError)
        return refusal(exc)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback by the server; the client learns nothing internal.
        return refusal(errors.FaceposeError("internal error"))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return refusal(errors.BadOption(problems_of(exc.errors(), drop=("query",))))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = ROUTING_CODES.get(exc.status_code, "http_error")
        message, headers = str(exc.detail), dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = headers.get("Allow", headers.get("allow", ""))
            message = (f"{request.method} is not what {request.url.path} answers: send "
                       f"{' or '.join(m.strip() for m in allowed.split(','))} (see /docs)")
        elif exc.status_code == 404:
            message = f"no route {request.url.path}: the API is listed at /docs"
        return JSONResponse({"error": {"code": code, "message": message}},
                            status_code=exc.status_code, headers=headers)

    app.add_exception_handler(errors.FaceposeError, facepose_error)
    app.add_exception_handler(Exception, unexpected_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    return refusal
