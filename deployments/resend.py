"""The retry policy of the Ingress and of video frames: resend what a lost replica dropped,
try alone what was on a replica that crashed, refuse what crashes alone too.

A replica can vanish under a request for reasons that are not the request's: its node
went away, an operator or the autoscaler killed it. Such a request is sent again, up
to ``retries`` times within its deadline. A replica *process* that died while working
(a crash, the kernel's or Ray's out-of-memory killer) may have been killed by one of
the inputs in flight on it, or by none. Each of them becomes a suspect
(``serve_app.suspects``, shared by ``deployments.shared_book``): it is tried once alone, in a process of its own
(``deployments.trials``), and only if that process dies too is it poison. An innocent
input loses nothing: its trial's answer is its answer.
"""

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np
from ray.exceptions import RayTaskError

from cartoon.retry import backoff_s
from deployments.failures import crashed_replica, replica_lost, worker_crashed
from deployments.suspects import Decision

_logger = logging.getLogger("ray.serve")

# How often a request whose input is on trial elsewhere asks for the verdict.
VERDICT_POLL_S = 0.25


def digest(*parts) -> str:
    """The identity of an input (bytes, arrays), for the book of suspects (never logged with them).

    Megabytes take milliseconds: callers on an event loop run it in a thread (hashlib
    lets go of the GIL for large buffers).
    """
    hashed = hashlib.blake2b(digest_size=16)
    for part in parts:
        hashed.update(np.ascontiguousarray(part) if isinstance(part, np.ndarray) else part)
    return hashed.hexdigest()


async def _trial(alone: Callable[[], Awaitable], key: str, evidence, poisoned: Callable[[], Exception]) -> object:
    _logger.warning("a suspect input is tried alone, in a process of its own")
    try:
        result = await alone()
    except Exception as exc:
        if worker_crashed(exc):
            await evidence.on_trial(key, crashed=True)
            _logger.warning("a suspect input took down the process it was tried in alone: it is poison")
            raise poisoned() from exc
        if isinstance(exc, RayTaskError):  # the trial ran to an end: the input's own error, not a crash
            await evidence.on_trial(key, crashed=False)
        else:
            await evidence.abandon_trial(key)
        raise
    except BaseException:  # cancelled: no verdict
        await evidence.abandon_trial(key)
        raise
    await evidence.on_trial(key, crashed=False)
    return result


async def with_resends(
    attempt: Callable[[], Awaitable],
    alone: Callable[[], Awaitable],
    key: str,
    evidence,
    retries: int,
    deadline: float,
    poisoned: Callable[[], Exception],
    retryable: Callable[[BaseException], bool] = replica_lost,
    wait_s: Callable[[int], float] = backoff_s,
) -> object:
    """``await attempt()``; resent after a lost replica; tried ``alone()`` after a crashed one.

    Args:
        attempt: one pass through the shared replicas.
        alone: one pass in a process of its own (``deployments.trials.run_alone``).
        key: the input's identity (``digest``) in the book.
        evidence: the book (``deployments.shared_book.Evidence``, or any object with its
            coroutines ``before_send``, ``on_death``, ``on_trial``, ``abandon_trial``).
        retries: resends at most after failures ``retryable`` accepts, each after
            ``wait_s(resend)``, within ``deadline``.
        deadline: ``time.time()`` after which no resend is started.
        poisoned: the error raised for a poison input.

    Raises:
        what ``poisoned`` returns, for an input that took down a replica and its trial,
        or that is marked so; asyncio.TimeoutError when the deadline passes while another
        request's trial of the same input runs; whatever the last attempt raised otherwise.
    """
    decision = await evidence.before_send(key)
    resend = 0
    while True:
        if decision is Decision.POISON:
            raise poisoned()
        if decision is Decision.AWAIT_VERDICT:
            if time.time() + VERDICT_POLL_S >= deadline:
                raise asyncio.TimeoutError
            await asyncio.sleep(VERDICT_POLL_S)
            decision = await evidence.before_send(key)
            continue
        if decision is Decision.TRY_ALONE:
            return await _trial(alone, key, evidence, poisoned)
        try:
            return await attempt()
        except Exception as exc:
            death = crashed_replica(exc)
            if death is not None:
                _logger.warning("a replica process died under the request; its input is a suspect")
                decision = await evidence.on_death(key, death)
                continue
            delay = wait_s(resend)
            if not retryable(exc) or resend == retries or time.time() + delay >= deadline:
                raise
            resend += 1
            _logger.warning("a replica was lost under the request; sending it again (attempt %d)", resend + 1)
            await asyncio.sleep(delay)
