"""Poison by evidence: the rules of the book of suspects, on a fake clock."""

from deployments.suspects import MAX_ENTRIES, Decision, SuspectBook


def book(ttl_s: float = 60.0, trial_s: float = 10.0):
    now = [0.0]
    return SuspectBook(ttl_s, trial_s, clock=lambda: now[0]), now


def test_an_input_never_at_a_death_is_sent():
    suspects, _ = book()
    assert suspects.before_send("photo") is Decision.SEND


def test_one_death_makes_a_suspect_tried_alone_by_one_caller_while_the_others_wait():
    suspects, _ = book()
    # Three copies of one photo were in flight on the replica that died.
    assert suspects.on_death("photo", "replica-1") is Decision.TRY_ALONE
    assert suspects.on_death("photo", "replica-1") is Decision.AWAIT_VERDICT
    assert suspects.before_send("photo") is Decision.AWAIT_VERDICT  # a new send waits too
    suspects.on_trial("photo", crashed=False)
    assert suspects.before_send("photo") is Decision.SEND
    assert suspects.on_death("photo", "replica-1") is Decision.SEND  # a late copy of the judged death


def test_an_input_whose_trial_dies_too_is_poison_until_its_time_runs_out():
    suspects, now = book(ttl_s=60)
    assert suspects.on_death("bomb", "replica-1") is Decision.TRY_ALONE
    suspects.on_trial("bomb", crashed=True)
    assert suspects.before_send("bomb") is Decision.POISON
    assert suspects.on_death("bomb", "replica-1") is Decision.POISON
    assert suspects.before_send("photo") is Decision.SEND  # other inputs are not touched
    now[0] = 61
    assert suspects.before_send("bomb") is Decision.SEND


def test_a_cleared_input_at_a_new_death_is_tried_again():
    suspects, _ = book()
    suspects.on_death("photo", "replica-1")
    suspects.on_trial("photo", crashed=False)
    assert suspects.on_death("photo", "replica-2") is Decision.TRY_ALONE


def test_an_input_at_max_deaths_is_poison_even_if_its_trials_pass():
    suspects, _ = book()
    for death in ("replica-1", "replica-2"):
        assert suspects.on_death("gpu-only-crash", death) is Decision.TRY_ALONE
        suspects.on_trial("gpu-only-crash", crashed=False)
    assert suspects.on_death("gpu-only-crash", "replica-3") is Decision.POISON


def test_a_trial_whose_caller_vanished_is_taken_up_after_its_lease():
    suspects, now = book(trial_s=10)
    assert suspects.on_death("photo", "replica-1") is Decision.TRY_ALONE
    now[0] = 5
    assert suspects.before_send("photo") is Decision.AWAIT_VERDICT
    now[0] = 11
    assert suspects.before_send("photo") is Decision.TRY_ALONE


def test_an_abandoned_trial_is_taken_up_by_the_next_caller():
    suspects, _ = book()
    suspects.on_death("photo", "replica-1")
    suspects.abandon_trial("photo")
    assert suspects.before_send("photo") is Decision.TRY_ALONE


def test_the_book_stays_bounded():
    suspects, _ = book()
    for index in range(MAX_ENTRIES + 5):
        suspects.on_death(f"input-{index}", "replica-1")
    assert len(suspects._entries) == MAX_ENTRIES
    assert suspects.before_send("input-0") is Decision.SEND  # the oldest forgotten
