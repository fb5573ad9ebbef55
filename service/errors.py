"""The errors facepose refuses work with: each type's ``code`` is stable and part of the API,
``status`` its HTTP status and ``grpc_code`` its gRPC status. ``app/refusals.py`` turns one into
what a transport sends (headers included); nothing else maps errors.

    FaceposeError                 internal_error        500  INTERNAL
    ├── BadRequestBody            bad_request           400  INVALID_ARGUMENT
    │   ├── OneImageOnly          one_image_only        400  INVALID_ARGUMENT
    │   └── ProtocolError         bad_request           400  INVALID_ARGUMENT  (a stream's)
    ├── EmptyImage                empty_image           400  INVALID_ARGUMENT
    ├── Unauthorized              unauthorized          401  UNAUTHENTICATED
    ├── StreamIdle                idle_timeout          408  DEADLINE_EXCEEDED
    ├── BodyReadTimeout           body_timeout          408  DEADLINE_EXCEEDED
    ├── RequestTooLarge           request_too_large     413  RESOURCE_EXHAUSTED
    ├── ImageTooLarge             image_too_large       413  RESOURCE_EXHAUSTED
    ├── BodyTooLarge              body_too_large        413  RESOURCE_EXHAUSTED
    ├── TooManyImages             too_many_images       413  RESOURCE_EXHAUSTED
    ├── TooManyBoxes              too_many_boxes        413  RESOURCE_EXHAUSTED
    ├── UriTooLong                uri_too_long          414  INVALID_ARGUMENT
    ├── UnsupportedImage          unsupported_image     415  INVALID_ARGUMENT
    ├── CorruptImage              corrupt_image         422  INVALID_ARGUMENT
    ├── BadOption                 bad_option            422  INVALID_ARGUMENT
    ├── Overloaded                overloaded            429  RESOURCE_EXHAUSTED
    ├── HeadersTooLarge           headers_too_large     431  INVALID_ARGUMENT
    ├── BackendUnavailable        backend_unavailable   503  UNAVAILABLE
    │   └── ShuttingDown          shutting_down         503  UNAVAILABLE
    └── DeadlineExceeded          deadline_exceeded     504  DEADLINE_EXCEEDED
"""

from __future__ import annotations


class FaceposeError(Exception):
    code = "internal_error"
    status = 500
    grpc_code = "INTERNAL"  # a name of grpc.StatusCode

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequestBody(FaceposeError):
    code = "bad_request"
    status = 400
    grpc_code = "INVALID_ARGUMENT"


class OneImageOnly(BadRequestBody):
    """A render draws one image: more is the client's mistake, not something to drop."""

    code = "one_image_only"


class ProtocolError(BadRequestBody):
    """The client broke the stream protocol (not a bad frame): the stream ends."""


class EmptyImage(FaceposeError):
    code = "empty_image"
    status = 400
    grpc_code = "INVALID_ARGUMENT"


class Unauthorized(FaceposeError):
    code = "unauthorized"
    status = 401
    grpc_code = "UNAUTHENTICATED"


class StreamIdle(FaceposeError):
    code = "idle_timeout"
    status = 408
    grpc_code = "DEADLINE_EXCEEDED"


class BodyReadTimeout(FaceposeError):
    code = "body_timeout"
    status = 408
    grpc_code = "DEADLINE_EXCEEDED"


class RequestTooLarge(FaceposeError):
    """One request needs more memory than the whole in-flight budget."""

    code = "request_too_large"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class ImageTooLarge(FaceposeError):
    code = "image_too_large"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class BodyTooLarge(FaceposeError):
    code = "body_too_large"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class TooManyImages(FaceposeError):
    code = "too_many_images"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class TooManyBoxes(FaceposeError):
    code = "too_many_boxes"
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UriTooLong(FaceposeError):
    """A request line over the HTTP server's head limit (options belong in a JSON body)."""

    code = "uri_too_long"
    status = 414
    grpc_code = "INVALID_ARGUMENT"


class UnsupportedImage(FaceposeError):
    code = "unsupported_image"
    status = 415
    grpc_code = "INVALID_ARGUMENT"


class CorruptImage(FaceposeError):
    code = "corrupt_image"
    status = 422
    grpc_code = "INVALID_ARGUMENT"


class BadOption(FaceposeError):
    code = "bad_option"
    status = 422
    grpc_code = "INVALID_ARGUMENT"


class Overloaded(FaceposeError):
    code = "overloaded"
    status = 429
    grpc_code = "RESOURCE_EXHAUSTED"


class HeadersTooLarge(FaceposeError):
    code = "headers_too_large"
    status = 431
    grpc_code = "INVALID_ARGUMENT"


class BackendUnavailable(FaceposeError):
    code = "backend_unavailable"
    status = 503
    grpc_code = "UNAVAILABLE"


class ShuttingDown(BackendUnavailable):
    """The process is stopping: a long-lived stream should reconnect, to another replica."""

    code = "shutting_down"


class DeadlineExceeded(FaceposeError):
    code = "deadline_exceeded"
    status = 504
    grpc_code = "DEADLINE_EXCEEDED"
