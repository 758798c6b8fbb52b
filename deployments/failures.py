"""What a failed call through a handle says about its replica, for every floor that calls one."""

from ray.exceptions import ActorDiedError, ActorUnavailableError, OutOfMemoryError, WorkerCrashedError


def causes(exc: BaseException):
    """The exception and what it wraps: Ray nests a replica's error in RayTaskErrors."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__


def replica_lost(exc: BaseException) -> bool:
    """Whether a replica died under the request (its node lost, its process killed)."""
    return any(isinstance(cause, (ActorDiedError, ActorUnavailableError)) for cause in causes(exc))


# How Ray words the death of a replica's *process* (a crash, an out-of-memory kill), as
# opposed to its node dying or an operator's ray.kill: only the former may be the
# input's doing (deployments.resend).
CRASH_MARKERS = ("worker process has died", "Worker unexpectedly exits")


def crashed_replica(exc: BaseException) -> str | None:
    """The actor id of the replica whose process died while working on the request, else None.

    "unknown" when Ray did not say which: such deaths then count as one.
    """
    for cause in causes(exc):
        if isinstance(cause, ActorDiedError) and any(marker in str(cause) for marker in CRASH_MARKERS):
            return cause.actor_id or "unknown"
    return None


def replica_crashed(exc: BaseException) -> bool:
    """Whether a replica's process died while working on the request."""
    return crashed_replica(exc) is not None


def worker_crashed(exc: BaseException) -> bool:
    """Whether the worker process of a task died under it (a crash, an out-of-memory kill)."""
    return any(isinstance(cause, (WorkerCrashedError, OutOfMemoryError)) for cause in causes(exc))
