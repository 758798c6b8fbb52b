"""What a failed call through a handle says about its replica, for every floor that calls one."""

from ray.exceptions import ActorDiedError, ActorUnavailableError


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
