"""The errors facepose refuses work with, declared once: each type's ``code`` is stable and part
of the API, ``status`` its HTTP status, ``grpc_code`` its gRPC status and ``when`` what it says.
``app/refusals.py`` turns one into what a transport sends (headers included); nothing else maps
errors. The README's error table is this module's output (``python -m service.errors``), and a
test keeps the two the same.
"""

from __future__ import annotations


class FaceposeError(Exception):
    code = "internal_error"
    status = 500
    grpc_code = "INTERNAL"  # a name of grpc.StatusCode
    when = "A fault of ours; the details go to the log, none to the client."

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestBody(FaceposeError):
    code = "bad_request"
    status = 400
    grpc_code = "INVALID_ARGUMENT"
    when = ("The body is not what the Content-Type says: malformed JSON, multipart or base64, or "
            "a malformed request head.")


class OneImageOnly(BadRequestBody):
    """A render draws one image: more is the client's mistake, not something to drop."""

    code = "one_image_only"
    when = "`/v1/render` was sent more than one image."


class ProtocolError(BadRequestBody):
    """The client broke the stream protocol (not a bad frame): the stream ends."""

    when = "A stream's message broke the stream protocol; the stream ends."


class EmptyImage(FaceposeError):
    code = "empty_image"
    status = 400
    grpc_code = "INVALID_ARGUMENT"
    when = "An image of 0 bytes."


class Unauthorized(FaceposeError):
    code = "unauthorized"
    status = 401
    grpc_code = "UNAUTHENTICATED"
    when = "API keys are on and the request has none, or a wrong one."


class NotFound(FaceposeError):
    """Answered by the HTTP router, not raised."""

    code = "not_found"
    status = 404
    grpc_code = "UNIMPLEMENTED"
    when = "No route has this path (`/docs` lists them)."


class MethodNotAllowed(FaceposeError):
    """Answered by the HTTP router, not raised."""

    code = "method_not_allowed"
    status = 405
    grpc_code = "UNIMPLEMENTED"
    when = "The route takes another method (the `Allow` header names it)."


class StreamIdle(FaceposeError):
    code = "idle_timeout"
    status = 408
    grpc_code = "DEADLINE_EXCEEDED"
    when = "A stream sent nothing for `FACEPOSE_STREAM_IDLE_TIMEOUT_S` (WebSocket close 4408)."


class BodyReadTimeout(FaceposeError):
    code = "body_timeout"
    status = 408
    grpc_code = "DEADLINE_EXCEEDED"
    when = ("The body did not arrive within its deadline (`FACEPOSE_BODY_READ_TIMEOUT_S` plus its "
            "size at `FACEPOSE_BODY_READ_MIN_BYTES_PER_S`).")


class RequestTooLarge(FaceposeError):
    """One request needs more memory than the whole in-flight budget."""

    code = "request_too_large"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    when = ("One request needs more memory than the whole in-flight budget "
            "(`FACEPOSE_MAX_INFLIGHT_MB`).")


class ImageTooLarge(FaceposeError):
    code = "image_too_large"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    when = ("An image over `FACEPOSE_MAX_IMAGE_BYTES` or, by its header, "
            "`FACEPOSE_MAX_IMAGE_PIXELS`.")


class BodyTooLarge(FaceposeError):
    code = "body_too_large"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    when = "The body, or a JSON body's decoded images, over `FACEPOSE_MAX_BODY_BYTES`."


class TooManyImages(FaceposeError):
    code = "too_many_images"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    when = "More images than `FACEPOSE_MAX_IMAGES_PER_REQUEST`."


class TooManyBoxes(FaceposeError):
    code = "too_many_boxes"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    when = "More boxes for one image than `FACEPOSE_MAX_BOXES_PER_IMAGE`."


class UriTooLong(FaceposeError):
    """A request line over the HTTP server's head limit (options belong in a JSON body)."""

    code = "uri_too_long"
    status = 414
    grpc_code = "INVALID_ARGUMENT"
    when = "A request line over 64 KiB: send long values such as boxes in a JSON body."


class UnsupportedImage(FaceposeError):
    code = "unsupported_image"
    status = 415
    grpc_code = "INVALID_ARGUMENT"
    when = "Not a JPEG, PNG or WebP, or a Content-Type the route does not take."


class CorruptImage(FaceposeError):
    code = "corrupt_image"
    status = 422
    grpc_code = "INVALID_ARGUMENT"
    when = "The image's header or data cannot be read: cut short or damaged."


class BadOption(FaceposeError):
    code = "bad_option"
    status = 422
    grpc_code = "INVALID_ARGUMENT"
    when = ("An unknown option, or a value out of its range (`/openapi.json` states each), or "
            "intrinsics that cannot describe the image.")


class Overloaded(FaceposeError):
    code = "overloaded"
    status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    when = ("The service is full (`FACEPOSE_MAX_IN_FLIGHT_REQUESTS`, the memory budget, or the "
            "stream slots): retry after `Retry-After`.")


class HeadersTooLarge(FaceposeError):
    code = "headers_too_large"
    status = 431
    grpc_code = "INVALID_ARGUMENT"
    when = "Request headers over 64 KiB."


class BackendUnavailable(FaceposeError):
    code = "backend_unavailable"
    status = 503
    grpc_code = "UNAVAILABLE"
    when = "The inference runtime is not ready or not answering: retry after `Retry-After`."


class ShuttingDown(BackendUnavailable):
    """The process is stopping: a long-lived stream should reconnect, to another replica."""

    code = "shutting_down"
    when = "The process is stopping: retry, and reach another replica."


class DeadlineExceeded(FaceposeError):
    code = "deadline_exceeded"
    status = 504
    grpc_code = "DEADLINE_EXCEEDED"
    when = ("The request took longer than `FACEPOSE_REQUEST_TIMEOUT_S` (or, over gRPC, the "
            "client's deadline).")


def error_types() -> list[type[FaceposeError]]:
    """Every error, FaceposeError first, each before its subclasses, in declaration order."""
    def walk(base: type[FaceposeError]) -> list[type[FaceposeError]]:
        return [base, *(t for sub in base.__subclasses__() for t in walk(sub))]
    return walk(FaceposeError)


def error_table() -> str:
    """The README's table of errors: one row a code, by HTTP status."""
    rows = ["| code | HTTP | gRPC | when |", "| --- | --- | --- | --- |"]
    seen: set[str] = set()
    for error in sorted(error_types(), key=lambda t: (t.status, t.code)):
        if error.code not in seen:
            seen.add(error.code)
            rows.append(f"| `{error.code}` | {error.status} | `{error.grpc_code}` "
                        f"| {error.when} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(error_table())
