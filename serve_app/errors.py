"""Where an HTTP error is chosen: every failure maps to a status and a JSON body."""

from fastapi.responses import JSONResponse
from ray.serve.exceptions import BackPressureError

from cartoon.errors import (
    AudioNotMuxableError,
    CorruptImageError,
    CorruptVideoError,
    DeviceOutOfMemoryError,
    NotAnImageError,
    NotAVideoError,
    OutputTooLargeError,
    PoisonFrameError,
    TooLargeForDeviceError,
    TooManyPiecesError,
    TooManyPixelsError,
    UnsupportedFormatError,
    VideoTooLongError,
)
from deployments.deadlines import DeadlineExceeded
from deployments.failures import causes as _causes
from deployments.failures import replica_lost

STATUS_BY_ERROR = {
    NotAnImageError: 400,
    CorruptImageError: 400,
    TooManyPixelsError: 413,
    UnsupportedFormatError: 415,
    TooManyPiecesError: 422,
    TooLargeForDeviceError: 422,
    OutputTooLargeError: 422,
    NotAVideoError: 400,
    CorruptVideoError: 400,
    VideoTooLongError: 413,
    AudioNotMuxableError: 422,
    PoisonFrameError: 422,
}
# Statuses Starlette raises itself (no route, wrong method), with our stable codes.
CODE_BY_HTTP_STATUS = {404: "not_found", 405: "method_not_allowed"}

# The JSON body of every error, for the OpenAPI schema.
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


class ApiError(Exception):
    """An error with its HTTP status, stable code and message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def poison_error() -> ApiError:
    return ApiError(422, "poison_input", "this image took down a replica, then the process it was tried in alone; "
                    "it is refused for a while")


def deadline_error(timeout_s: float) -> ApiError:
    return ApiError(504, "timeout", f"the image was not done within {timeout_s} s")


def overloaded_error(retry_after_s: int, reason: str = "the service is at capacity") -> ApiError:
    return ApiError(503, "overloaded", f"{reason}; retry shortly", {"Retry-After": str(retry_after_s)})


def to_api_error(exc: BaseException, retry_after_s: int, timeout_s: float) -> ApiError | None:
    """Maps an exception raised anywhere in the graph to an ApiError; None for a bug."""
    causes = list(_causes(exc))
    if any(isinstance(cause, DeadlineExceeded) for cause in causes):
        return deadline_error(timeout_s)
    if any(isinstance(cause, BackPressureError) for cause in causes):
        return overloaded_error(retry_after_s)
    if replica_lost(exc):
        # Reached only once the Ingress's own retries are spent (or the deadline is
        # near): no replica could take the image back in time.
        return ApiError(
            503, "replica_lost", "the replica working on this image was lost and no other could take it in time",
            {"Retry-After": str(retry_after_s)},
        )
    if any(isinstance(cause, DeviceOutOfMemoryError) for cause in causes):
        # The batch did not fit even halved: other requests hold the GPU's memory now.
        return ApiError(
            503, DeviceOutOfMemoryError.code, "the GPU is out of memory for this image; retry shortly",
            {"Retry-After": str(retry_after_s)},
        )
    # The innermost one is the exception the replica raised, with its own message;
    # the outer ones are Ray's wrappers carrying tracebacks.
    for cause in reversed(causes):
        for kind, status in STATUS_BY_ERROR.items():
            if isinstance(cause, kind):
                return ApiError(status, cause.code, str(cause))
    return None
