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
            hold.__enter__()
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


def test_failed_work_does_not_count_as_throughput():
    clock = Clock()
    admission = Admission(timeout_s=60, min_in_flight=2, max_in_flight=500, clock=clock)
    for _ in range(50):
        with pytest.raises(RuntimeError), admission.admit():
            clock.now += 0.01
            raise RuntimeError("rejected downstream")
    assert admission.rate is None and admission.limit() == 2
