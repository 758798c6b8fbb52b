"""The retry policy of the Ingress: resend what a lost replica dropped, never what killed one.

A replica can vanish under a request for reasons that are not the request's: its node
went away, an operator or the autoscaler killed it. Such a request is sent again, up
to ``replica_retries`` times within its deadline. A replica *process* that died while
working (a crash, the kernel's or Ray's out-of-memory killer) may have been killed by
the input itself: sending that input to the next replica would take that one down
too, and every image in flight there. So such an input is marked poison on the first
death, answered ``422 poison_input``, and refused before any replica for a while after.
Every other image that was on that replica is poisoned with it: with one death there
is no telling which image did it, and a request from a crash is never resent.
"""

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from cartoon.retry import backoff_s
from serve_app.errors import ApiError, replica_crashed, replica_lost

_logger = logging.getLogger("ray.serve")

# Poison marks kept per Ingress replica: bounded, the oldest forgotten first.
MAX_POISON_MARKS = 10_000


def digest(data: bytes) -> str:
    """The identity of an input, for poison marks (never logged with the bytes)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class PoisonMarks:
    """Inputs a replica died on, remembered for ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.clock = ttl_s, clock
        self._marks: OrderedDict[str, float] = OrderedDict()

    def mark(self, key: str) -> None:
        self._marks[key] = self.clock() + self.ttl_s
        self._marks.move_to_end(key)
        while len(self._marks) > MAX_POISON_MARKS:
            self._marks.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        expires = self._marks.get(key)
        if expires is None:
            return False
        if expires < self.clock():
            del self._marks[key]
            return False
        return True


def poison_error() -> ApiError:
    return ApiError(422, "poison_input", "a replica died while processing this image, so it is not sent to "
                    "another one; it is refused for a while")


async def with_resends(
    attempt: Callable[[], Awaitable],
    key: str,
    poison: PoisonMarks,
    retries: int,
    deadline: float,
) -> object:
    """``await attempt()``, sent again after a replica was lost, but never after a replica crashed.

    Args:
        attempt: one pass through the graph.
        key: the input's ``digest``, for its poison mark.
        poison: where crashes are remembered.
        retries: resends at most, each after ``cartoon.retry.backoff_s``, within ``deadline``.
        deadline: ``time.time()`` after which no resend is started.

    Raises:
        ApiError: 422 ``poison_input`` when a replica process died under the input.
        Exception: whatever the last attempt raised otherwise.
    """
    resend = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if replica_crashed(exc):
                poison.mark(key)
                _logger.warning("a replica process died under the request; the input is marked poison")
                raise poison_error() from exc
            wait_s = backoff_s(resend)
            if not replica_lost(exc) or resend == retries or time.time() + wait_s >= deadline:
                raise
            resend += 1
            _logger.warning("a replica was lost under the request; sending it again (attempt %d)", resend + 1)
            await asyncio.sleep(wait_s)
