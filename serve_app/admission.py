"""Admission control: take only the work that can be finished within the request timeout.

Little's law: a service that completes ``rate`` images per second finishes the
``n`` images in flight in about ``n / rate`` seconds. So an Ingress replica admits a
new image only while ``in_flight < rate * request_timeout_s * HEADROOM``; any other
request is answered ``503`` with ``Retry-After`` at once, instead of queueing for a
minute and ending in a ``504``. ``rate`` is measured, not configured: completions per
second of *busy* time (time with at least one request in flight), both aged by busy
time with a time constant of ``WINDOW_S``, so the estimate follows the real mix of
image sizes and the replicas actually running, and an idle spell does not erase it.
"""

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Half of what the measured rate could finish in time: the rate is an average over a
# mix of sizes, and an image admitted last waits for everything admitted before it.
HEADROOM = 0.5
# How fast old measurements fade (seconds of busy time): long enough to average over batches,
# short enough to follow a replica lost or added.
WINDOW_S = 30.0
# Completions (decayed) needed before the measured rate replaces ``min_in_flight``.
MIN_SAMPLES = 3.0


class Overloaded(Exception):
    """More work in flight than can be finished within the request timeout."""

    def __init__(self, in_flight: int, limit: int):
        super().__init__(f"{in_flight} images in flight, the limit is {limit}")
        self.in_flight, self.limit = in_flight, limit


class Admission:
    """Counts the images in flight on one Ingress replica and measures its throughput.

    Args:
        timeout_s: the request timeout every admitted image must meet.
        min_in_flight: the limit until enough completions are measured.
        max_in_flight: the limit's ceiling, whatever the measured rate.
        clock: seconds, monotonic; a parameter so tests can drive time.
    """

    def __init__(
        self,
        timeout_s: float,
        min_in_flight: int,
        max_in_flight: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.timeout_s, self.min_in_flight, self.max_in_flight = timeout_s, min_in_flight, max_in_flight
        self.clock = clock
        self.in_flight = 0
        self._completions = 0.0
        self._busy_s = 0.0
        self._last = clock()

    def _advance(self) -> None:
        """Accounts for the time since the last event; only busy time ages the measurements."""
        now = self.clock()
        busy = max(0.0, now - self._last) if self.in_flight else 0.0
        decay = math.exp(-busy / WINDOW_S)
        self._completions *= decay
        self._busy_s = self._busy_s * decay + busy
        self._last = now

    @property
    def rate(self) -> float | None:
        """Measured images per second of busy time; None until enough were measured."""
        if self._completions < MIN_SAMPLES or self._busy_s <= 0.0:
            return None
        return self._completions / self._busy_s

    def limit(self) -> int:
        """How many images may be in flight now."""
        self._advance()
        rate = self.rate
        if rate is None:
            return self.min_in_flight
        # The epsilon keeps 0.2 * 60 * 0.5 at 6, not 5.999... floored to 5.
        fits = math.floor(rate * self.timeout_s * HEADROOM + 1e-9)
        return max(self.min_in_flight, min(self.max_in_flight, fits))

    @contextmanager
    def admit(self, images: int = 1) -> Iterator[None]:
        """Holds ``images`` slots for the duration of the block.

        Only a block that ends without an exception counts as completed work: a
        rejection further down ends fast and would inflate the measured rate. A
        request larger than the limit is admitted alone, so it is not refused forever.

        Raises:
            Overloaded: when they do not fit; nothing is held then.
        """
        limit = self.limit()
        if self.in_flight and self.in_flight + images > limit:
            raise Overloaded(self.in_flight, limit)
        self.in_flight += images
        completed = False
        try:
            yield
            completed = True
        finally:
            self._advance()
            self.in_flight -= images
            if completed:
                self._completions += images
