"""Poison by evidence: the rules, with no Ray (``deployments.shared_book`` shares them across replicas).

When a replica's process dies, every input in flight on it was there, and one death
cannot say which of them did it. So each of them becomes a *suspect*, not poison. A
suspect is never sent to a shared replica again until it has been tried once *alone*:
in a process of its own, with nothing else of anyone's in flight there. Only an input
whose trial process dies too (the second death it was at) is poison, refused for
``ttl_s``. An input whose trial passes is cleared of that death, and goes on through
the graph as any other.

A trial runs on the CPU, so a crash only a GPU replica has would pass it every time:
an input that was at ``max_deaths`` replica deaths within ``ttl_s`` is poison whatever
its trials said, so such an input costs at most that many replicas.
"""

import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

# Inputs remembered at once: bounded, the oldest forgotten first.
MAX_ENTRIES = 10_000
# Replica deaths an input may be at within ``ttl_s`` before it is poison without a
# failed trial (a crash the trial process cannot reproduce).
MAX_DEATHS = 3


class Decision(enum.Enum):
    SEND = "send"  # through the graph, as any input
    TRY_ALONE = "try_alone"  # the caller runs the input's trial, alone, and reports how it ended
    AWAIT_VERDICT = "await_verdict"  # another caller's trial is running: ask again shortly
    POISON = "poison"  # refuse it


@dataclass
class _Entry:
    expires: float
    deaths: set[str] = field(default_factory=set)
    state: str = "suspect"  # suspect | cleared | poison
    trial_until: float = 0.0  # a trial is running until then (its lease, should its caller vanish)


class SuspectBook:
    """What is known about inputs that were in flight at a replica's death.

    Args:
        ttl_s: how long an input's record lasts after its last death or verdict.
        trial_s: the lease of a trial: past it with no verdict, another caller may try.
        max_deaths: deaths within ``ttl_s`` that make an input poison without a trial.
        clock: seconds, monotonic.
    """

    def __init__(self, ttl_s: float, trial_s: float, max_deaths: int = MAX_DEATHS,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.trial_s, self.max_deaths, self.clock = ttl_s, trial_s, max_deaths, clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def _entry(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires < self.clock():
            del self._entries[key]
            return None
        return entry

    def _suspect(self, entry: _Entry) -> Decision:
        now = self.clock()
        if entry.trial_until > now:
            return Decision.AWAIT_VERDICT
        entry.trial_until = now + self.trial_s
        return Decision.TRY_ALONE

    def before_send(self, key: str) -> Decision:
        """What to do with an input about to be sent."""
        entry = self._entry(key)
        if entry is None or entry.state == "cleared":
            return Decision.SEND
        if entry.state == "poison":
            return Decision.POISON
        return self._suspect(entry)

    def on_death(self, key: str, death: str) -> Decision:
        """An input was in flight on a replica whose process died; ``death`` names that death.

        Copies of one input in flight at one death count once: the first caller tries
        it alone, the others wait for its verdict.
        """
        entry = self._entry(key)
        if entry is None:
            entry = self._entries[key] = _Entry(self.clock() + self.ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)
        new = death not in entry.deaths
        entry.deaths.add(death)
        if new:
            entry.expires = self.clock() + self.ttl_s
        if entry.state == "poison" or len(entry.deaths) >= self.max_deaths:
            entry.state = "poison"
            return Decision.POISON
        if entry.state == "cleared":
            if not new:  # this death was judged already: its trial passed
                return Decision.SEND
            entry.state = "suspect"
        return self._suspect(entry)

    def on_trial(self, key: str, crashed: bool) -> None:
        """The verdict of a trial: its process died (poison) or it ran to an end (cleared)."""
        entry = self._entry(key)
        if entry is None:
            entry = self._entries[key] = _Entry(self.clock() + self.ttl_s)
        entry.state = "poison" if crashed else "cleared"
        entry.trial_until = 0.0
        entry.expires = self.clock() + self.ttl_s

    def abandon_trial(self, key: str) -> None:
        """A trial that ended with no verdict (its deadline passed): the next caller tries again."""
        entry = self._entry(key)
        if entry is not None and entry.state == "suspect":
            entry.trial_until = 0.0
