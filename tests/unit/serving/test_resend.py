"""The retry policy: resend after a lost replica, try alone after a crashed one, refuse what crashes alone."""

import asyncio
import time

import pytest
from ray.exceptions import ActorDiedError, RayTaskError, WorkerCrashedError

from deployments.failures import replica_crashed, replica_lost
from serve_app.errors import ApiError, poison_error
from deployments.resend import with_resends
from deployments.suspects import Decision, SuspectBook

# As the GCS words each death (the first line of ActorDiedError's message is Ray's own).
KILLED = "The actor died unexpectedly before finishing this task.\nThe actor is dead because it was killed by `ray.kill`."
NODE_DIED = "The actor died unexpectedly before finishing this task.\nThe actor died because its node has died. Node Id: 1f"
CRASHED = ("The actor died unexpectedly before finishing this task.\nThe actor is dead because its worker process has "
           "died. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection "
           "error code 2. End of file.")


def death(message: str, actor_id: str = "replica-1") -> ActorDiedError:
    error = ActorDiedError()
    error.error_msg, error.actor_id = message, actor_id
    return error


def wrapped(error: Exception) -> Exception:
    """As the Ingress receives a stage's error: Ray's wrapper around it."""
    return RayTaskError("Cartoonizer.stylize", "Traceback ...", error, proctitle="test", ip="127.0.0.1")


@pytest.mark.parametrize("message, crashed", [(KILLED, False), (NODE_DIED, False), (CRASHED, True)])
def test_only_a_dead_process_counts_as_a_crash(message, crashed):
    for error in (death(message), wrapped(death(message))):
        assert replica_lost(error)
        assert replica_crashed(error) is crashed


class LocalEvidence:
    """``deployments.shared_book.Evidence`` without the actor: the same book, in this process."""

    def __init__(self):
        self.book = SuspectBook(ttl_s=60, trial_s=30)

    async def before_send(self, key):
        return self.book.before_send(key)

    async def on_death(self, key, death):
        return self.book.on_death(key, death)

    async def on_trial(self, key, crashed):
        self.book.on_trial(key, crashed)

    async def abandon_trial(self, key):
        self.book.abandon_trial(key)


def attempts(*outcomes):
    """An attempt that raises or returns each outcome in turn, and the list of calls."""
    calls = []

    async def attempt():
        outcome = outcomes[len(calls)]
        calls.append(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return attempt, calls


def send(attempt, alone=None, evidence=None, retries=2):
    alone = alone or attempts()[0]
    return asyncio.run(with_resends(attempt, alone, "key", evidence or LocalEvidence(), retries, time.time() + 60,
                                    poisoned=poison_error))


def test_a_lost_replica_is_resent_and_answered():
    attempt, calls = attempts(death(KILLED), death(NODE_DIED), "done")
    evidence = LocalEvidence()
    assert send(attempt, evidence=evidence) == "done"
    assert len(calls) == 3 and evidence.book.before_send("key") is Decision.SEND


def test_resends_stop_at_the_configured_count():
    attempt, calls = attempts(death(KILLED), death(KILLED), death(KILLED))
    with pytest.raises(ActorDiedError):
        send(attempt, retries=1)
    assert len(calls) == 2


def test_an_input_a_replica_crashed_on_is_answered_by_its_trial_alone_and_cleared():
    attempt, calls = attempts(wrapped(death(CRASHED)), "from the graph")
    alone, trials = attempts("from the trial")
    evidence = LocalEvidence()
    assert send(attempt, alone, evidence) == "from the trial"
    assert len(calls) == 1 and len(trials) == 1  # never sent to a shared replica again
    assert evidence.book.before_send("key") is Decision.SEND  # cleared: later sends go through the graph


def test_an_input_that_takes_its_trial_down_too_is_poison_and_refused_before_any_replica():
    attempt, calls = attempts(wrapped(death(CRASHED)), "never reached")
    alone, trials = attempts(WorkerCrashedError())
    evidence = LocalEvidence()
    with pytest.raises(ApiError) as raised:
        send(attempt, alone, evidence)
    assert (raised.value.status, raised.value.code) == (422, "poison_input")
    assert len(calls) == 1 and len(trials) == 1
    again, again_calls = attempts("never reached")
    with pytest.raises(ApiError):
        send(again, alone, evidence)
    assert again_calls == [] and len(trials) == 1


def test_copies_in_flight_at_one_death_get_one_trial_and_all_their_answers():
    """The bug report: one photo sent over and over; a replica dies under three copies."""
    evidence = LocalEvidence()
    trials = []

    async def alone():
        trials.append(1)
        await asyncio.sleep(0.3)
        return "from the trial"

    async def three_copies():
        copies = [attempts(wrapped(death(CRASHED)), "from the graph")[0] for _ in range(3)]
        return await asyncio.gather(*(with_resends(copy, alone, "key", evidence, 2, time.time() + 60, poisoned=poison_error)
                                      for copy in copies))

    answers = asyncio.run(three_copies())
    assert sorted(answers) == ["from the graph", "from the graph", "from the trial"]
    assert len(trials) == 1


def test_a_trial_ending_in_the_inputs_own_error_clears_it_and_raises_that_error():
    attempt, _ = attempts(wrapped(death(CRASHED)))
    alone, _ = attempts(wrapped(ValueError("corrupt")))
    evidence = LocalEvidence()
    with pytest.raises(RayTaskError):
        send(attempt, alone, evidence)
    assert evidence.book.before_send("key") is Decision.SEND


def test_other_errors_are_not_resent():
    attempt, calls = attempts(ValueError("a stage's own error"), "never reached")
    with pytest.raises(ValueError):
        send(attempt)
    assert len(calls) == 1
