"""Admission from measured throughput: Little's law, on a clock the test drives."""

import pytest

from serve_app.admission import HEADROOM, Admission, Overloaded


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(admission: Admission, clock: Clock, images: int, seconds_each: float, concurrently: int) -> None:
    """Completes ``images`` images, ``concurrently`` at a time, each taking ``seconds_each``."""
    for _ in range(images // concurrently):
        holds = [admission.admit() for _ in range(concurrently)]
        for hold in holds:
            hold.__enter__().done()
        clock.now += seconds_each
        for hold in holds:
            hold.__exit__(None, None, None)


def test_the_limit_is_the_minimum_until_throughput_is_measured():
    admission = Admission(timeout_s=60, min_in_flight=4, max_in_flight=500, clock=Clock())
    assert admission.limit() == 4


def test_the_limit_follows_the_measured_rate_and_timeout():
    clock = Clock()
    admission = Admission(timeout_s=60, min_in_flight=4, max_in_flight=500, clock=clock)
    run(admission, clock, images=40, seconds_each=2.0, concurrently=4)  # 2 images per second
    assert admission.rate == pytest.approx(2.0, rel=0.01)
    assert admission.limit() == int(2.0 * 60 * HEADROOM)
    # An idle hour does not erase what was measured: rate is per busy second.
    clock.now += 3600
    assert admission.limit() == int(2.0 * 60 * HEADROOM)


def test_a_slower_service_admits_less():
    clock = Clock()
    admission = Admission(timeout_s=60, min_in_flight=2, max_in_flight=500, clock=clock)
    run(admission, clock, images=20, seconds_each=5.0, concurrently=1)  # 0.2 per second
    assert admission.limit() == int(0.2 * 60 * HEADROOM)


def test_over_the_limit_is_refused_and_holds_nothing():
    admission = Admission(timeout_s=60, min_in_flight=2, max_in_flight=500, clock=Clock())
    with admission.admit(), admission.admit():
        with pytest.raises(Overloaded):
            with admission.admit():
                pass
        assert admission.in_flight == 2
    assert admission.in_flight == 0


def test_a_batch_larger_than_the_limit_is_admitted_alone():
    admission = Admission(timeout_s=60, min_in_flight=2, max_in_flight=500, clock=Clock())
    with admission.admit(10):
        assert admission.in_flight == 10
    with admission.admit():
        with pytest.raises(Overloaded):
            with admission.admit(10):
                pass


def test_a_cold_start_admits_what_the_measured_forward_can_finish_in_time():
    admission = Admission(timeout_s=60, min_in_flight=8, max_in_flight=500, clock=Clock())
    admission.estimate(2 / 0.25)  # two Cartoonizers, 0.25 s a typical image
    assert admission.limit() == int(8 * 60 * HEADROOM)
    holds = [admission.admit() for _ in range(16)]  # a first burst of 16 is all admitted
    for hold in holds:
        hold.__enter__()
    assert admission.in_flight == 16


def test_measured_throughput_replaces_the_estimate():
    clock = Clock()
    admission = Admission(timeout_s=60, min_in_flight=2, max_in_flight=500, clock=clock)
    admission.estimate(100.0)
    run(admission, clock, images=40, seconds_each=2.0, concurrently=4)  # really 2 per second
    assert admission.limit() == int(2.0 * 60 * HEADROOM)


def test_only_images_that_ran_count_as_completions():
    """A batch of 32 broken files ends in milliseconds; counted, it would lift the limit to the ceiling."""
    clock = Clock()
    admission = Admission(timeout_s=60, min_in_flight=2, max_in_flight=200, clock=clock)
    for _ in range(10):
        with admission.admit(32):
            clock.now += 0.005
    assert admission.rate is None and admission.limit() == 2
    with admission.admit(32) as ticket:
        clock.now += 8.0
        ticket.done(4)  # 4 of the 32 really ran
    assert admission.measured_rate == pytest.approx(4 / 8.05, rel=0.02)


def test_a_refusal_is_decided_without_holding_a_slot():
    admission = Admission(timeout_s=60, min_in_flight=1, max_in_flight=500, clock=Clock())
    admission.check()
    with admission.admit():
        with pytest.raises(Overloaded):
            admission.check()
        admission.check(0)  # a batch of broken files holds nothing and is never refused
    assert admission.in_flight == 0


def test_failed_work_does_not_count_as_throughput():
    clock = Clock()
    admission = Admission(timeout_s=60, min_in_flight=2, max_in_flight=500, clock=clock)
    for _ in range(50):
        with pytest.raises(RuntimeError), admission.admit():
            clock.now += 0.01
            raise RuntimeError("rejected downstream")
    assert admission.rate is None and admission.limit() == 2
