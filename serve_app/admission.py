"""Admission control: take only the work that can be finished within the request timeout.

Little's law: a service that completes ``rate`` images per second finishes the
``n`` images in flight in about ``n / rate`` seconds. So an Ingress replica admits a
new image only while ``in_flight < rate * request_timeout_s * HEADROOM``; any other
request is answered ``503`` with ``Retry-After`` at once, instead of queueing for a
minute and ending in a ``504``.

``rate`` is measured, not configured: images that really ran through the graph per
second of *busy* time (time with at least one request in flight), both aged by busy
time with a time constant of ``WINDOW_S``, so the estimate follows the real mix of
image sizes and the replicas actually running, and an idle spell does not erase it.
Until enough images have completed, the rate is the *estimate* the Cartoonizers made
at start-up by timing a forward of a typical image (``deployments.cartoonizer``), so
a first burst after a start is served at what the machine can do, not at a fixed floor.
"""

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Half of what the rate could finish in time: the rate is an average over a mix of
# sizes, and an image admitted last waits for everything admitted before it.
HEADROOM = 0.5
# How fast old measurements fade (seconds of busy time): long enough to average over batches,
# short enough to follow a replica lost or added.
WINDOW_S = 30.0
# Completions (decayed) needed before the measured rate replaces the start-up estimate.
MIN_SAMPLES = 3.0


class Overloaded(Exception):
    """More work in flight than can be finished within the request timeout."""

    def __init__(self, in_flight: int, limit: int):
        super().__init__(f"{in_flight} images in flight, the limit is {limit}")
        self.in_flight, self.limit = in_flight, limit


class Ticket:
    """The slots one request holds; it reports how many of its images really ran."""

    def __init__(self, images: int):
        self.images = images
        self.completed = 0

    def done(self, images: int = 1) -> None:
        """Counts ``images`` that went through the graph and were answered 200."""
        self.completed = min(self.images, self.completed + images)


class Admission:
    """Counts the images in flight on one Ingress replica and measures its throughput.

    Args:
        timeout_s: the request timeout every admitted image must meet.
        min_in_flight: the limit's floor, and the limit while nothing is known.
        max_in_flight: the limit's ceiling, whatever the rate.
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
        self.estimated_rate: float | None = None
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

    def estimate(self, images_per_s: float) -> None:
        """Sets the rate to use until enough completions are measured (from a timed forward)."""
        self.estimated_rate = images_per_s if images_per_s > 0 else None

    @property
    def measured_rate(self) -> float | None:
        """Images per second of busy time that completed; None until enough were measured."""
        if self._completions < MIN_SAMPLES or self._busy_s <= 0.0:
            return None
        return self._completions / self._busy_s

    @property
    def rate(self) -> float | None:
        """The rate the limit follows: measured when known, else the start-up estimate."""
        measured = self.measured_rate
        return measured if measured is not None else self.estimated_rate

    def limit(self) -> int:
        """How many images may be in flight now."""
        self._advance()
        rate = self.rate
        if rate is None:
            return self.min_in_flight
        # The epsilon keeps 0.2 * 60 * 0.5 at 6, not 5.999... floored to 5.
        fits = math.floor(rate * self.timeout_s * HEADROOM + 1e-9)
        return max(self.min_in_flight, min(self.max_in_flight, fits))

    def check(self, images: int = 1) -> None:
        """Refuses now, holding nothing, when ``images`` more would not fit.

        Called before a request's body is read, so a refusal costs no upload or parse.
        A request larger than the limit passes when nothing is in flight, so it is
        not refused forever; one of no images always passes.

        Raises:
            Overloaded: when they do not fit.
        """
        limit = self.limit()
        if images and self.in_flight and self.in_flight + images > limit:
            raise Overloaded(self.in_flight, limit)

    @contextmanager
    def admit(self, images: int = 1) -> Iterator[Ticket]:
        """Holds ``images`` slots for the duration of the block.

        Only the images the block reports through ``Ticket.done`` count as completed
        work: a per-item error or a rejection further down ends fast and would inflate
        the measured rate.

        Raises:
            Overloaded: when they do not fit (``check``); nothing is held then.
        """
        self.check(images)
        self.in_flight += images
        ticket = Ticket(images)
        try:
            yield ticket
        finally:
            self._advance()
            self.in_flight -= images
            self._completions += ticket.completed
