"""Where an HTTP error is chosen: every failure maps to a status and a JSON body."""

from fastapi.responses import JSONResponse
from ray.exceptions import ActorDiedError, ActorUnavailableError, OutOfMemoryError, WorkerCrashedError
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


def _causes(exc: BaseException):
    """The exception and what it wraps: Ray nests a replica's error in RayTaskErrors."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__


def replica_lost(exc: BaseException) -> bool:
    """Whether a replica died under the request (its node lost, its process killed)."""
    return any(isinstance(cause, (ActorDiedError, ActorUnavailableError)) for cause in _causes(exc))


# How Ray words the death of a replica's *process* (a crash, an out-of-memory kill), as
# opposed to its node dying or an operator's ray.kill: only the former may be the
# input's doing (serve_app.resend).
CRASH_MARKERS = ("worker process has died", "Worker unexpectedly exits")


def crashed_replica(exc: BaseException) -> str | None:
    """The actor id of the replica whose process died while working on the request, else None.

    "unknown" when Ray did not say which: such deaths then count as one.
    """
    for cause in _causes(exc):
        if isinstance(cause, ActorDiedError) and any(marker in str(cause) for marker in CRASH_MARKERS):
            return cause.actor_id or "unknown"
    return None


def replica_crashed(exc: BaseException) -> bool:
    """Whether a replica's process died while working on the request."""
    return crashed_replica(exc) is not None


def worker_crashed(exc: BaseException) -> bool:
    """Whether the worker process of a task died under it (a crash, an out-of-memory kill)."""
    return any(isinstance(cause, (WorkerCrashedError, OutOfMemoryError)) for cause in _causes(exc))


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
