"""The Ingress's retry policy: resend after a lost replica, never after a crashed one."""

import asyncio
import time

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

from serve_app.errors import ApiError, replica_crashed, replica_lost
from serve_app.resend import PoisonMarks, digest, with_resends

# As the GCS words each death (the first line of ActorDiedError's message is Ray's own).
KILLED = "The actor died unexpectedly before finishing this task.\nThe actor is dead because it was killed by `ray.kill`."
NODE_DIED = "The actor died unexpectedly before finishing this task.\nThe actor died because its node has died. Node Id: 1f"
CRASHED = ("The actor died unexpectedly before finishing this task.\nThe actor is dead because its worker process has "
           "died. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection "
           "error code 2. End of file.")


def death(message: str) -> ActorDiedError:
    error = ActorDiedError()
    error.error_msg = message
    return error


def wrapped(error: Exception) -> Exception:
    """As the Ingress receives a stage's error: Ray's wrapper around it."""
    return RayTaskError("Cartoonizer.stylize", "Traceback ...", error, proctitle="test", ip="127.0.0.1")


@pytest.mark.parametrize("message, crashed", [(KILLED, False), (NODE_DIED, False), (CRASHED, True)])
def test_only_a_dead_process_counts_as_a_crash(message, crashed):
    for error in (death(message), wrapped(death(message))):
        assert replica_lost(error)
        assert replica_crashed(error) is crashed


def attempts(*outcomes):
    """An attempt that raises or returns each outcome in turn, and the count of calls."""
    calls = []

    async def attempt():
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return attempt, calls


def test_a_lost_replica_is_resent_and_answered():
    attempt, calls = attempts(death(KILLED), death(NODE_DIED), "done")
    poison = PoisonMarks(ttl_s=60)
    assert asyncio.run(with_resends(attempt, "key", poison, retries=2, deadline=time.time() + 60)) == "done"
    assert len(calls) == 3 and "key" not in poison


def test_resends_stop_at_the_configured_count():
    attempt, calls = attempts(death(KILLED), death(KILLED), death(KILLED))
    with pytest.raises(ActorDiedError):
        asyncio.run(with_resends(attempt, "key", PoisonMarks(60), retries=1, deadline=time.time() + 60))
    assert len(calls) == 2


def test_an_input_a_replica_crashed_on_is_not_sent_again_and_is_marked():
    attempt, calls = attempts(wrapped(death(CRASHED)), "never reached")
    poison = PoisonMarks(ttl_s=60)
    with pytest.raises(ApiError) as raised:
        asyncio.run(with_resends(attempt, "key", poison, retries=2, deadline=time.time() + 60))
    assert (raised.value.status, raised.value.code) == (422, "poison_input")
    assert len(calls) == 1 and "key" in poison


def test_other_errors_are_not_resent():
    attempt, calls = attempts(ValueError("a stage's own error"), "never reached")
    with pytest.raises(ValueError):
        asyncio.run(with_resends(attempt, "key", PoisonMarks(60), retries=2, deadline=time.time() + 60))
    assert len(calls) == 1


def test_poison_marks_expire_and_stay_bounded():
    now = [0.0]
    poison = PoisonMarks(ttl_s=10, clock=lambda: now[0])
    poison.mark(digest(b"bad"))
    assert digest(b"bad") in poison and digest(b"good") not in poison
    now[0] = 11
    assert digest(b"bad") not in poison
