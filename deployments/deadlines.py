"""Each request's deadline travels with its job, so no stage works for a client that gave up.

Deadlines are wall-clock times (``time.time()``), as the stages may run on other nodes;
the nodes' clocks are assumed synchronised (NTP), as Ray's own timeouts assume.
"""

import time


class DeadlineExceeded(Exception):
    """The request's deadline passed before a stage began: its result could not be delivered."""

    def __init__(self, stage: str):
        super().__init__(f"the request's deadline passed before {stage}")
        self.stage = stage


def check(deadline: float, stage: str) -> None:
    """Raises ``DeadlineExceeded`` when ``deadline`` (0 = none) has passed."""
    if deadline and time.time() > deadline:
        raise DeadlineExceeded(stage)
