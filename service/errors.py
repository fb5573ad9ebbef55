"""Error types the pipeline raises; the API maps each to one status code in one place."""

from __future__ import annotations


class FaceposeError(Exception):
    """Base class: ``code`` is stable and part of the API; ``status`` is the HTTP status."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyImage(FaceposeError):
    code = "empty_image"
    status = 400


class UnsupportedImage(FaceposeError):
    code = "unsupported_image"
    status = 415


class CorruptImage(FaceposeError):
    code = "corrupt_image"
    status = 422


class ImageTooLarge(FaceposeError):
    code = "image_too_large"
    status = 413


class TooManyImages(FaceposeError):
    code = "too_many_images"
    status = 413


class BadOption(FaceposeError):
    code = "bad_option"
    status = 422


class BadRequestBody(FaceposeError):
    code = "bad_request"
    status = 400


class BodyTooLarge(FaceposeError):
    code = "body_too_large"
    status = 413


class BackendUnavailable(FaceposeError):
    code = "backend_unavailable"
    status = 503


class ShuttingDown(BackendUnavailable):
    """The process is stopping: a long-lived stream should reconnect, to another replica."""

    code = "shutting_down"


class DeadlineExceeded(FaceposeError):
    code = "deadline_exceeded"
    status = 504


class Overloaded(FaceposeError):
    code = "overloaded"
    status = 429


class Unauthorized(FaceposeError):
    code = "unauthorized"
    status = 401


class TooManyBoxes(FaceposeError):
    code = "too_many_boxes"
    status = 413
