"""The one backoff rule of the project: the Ingress's resends and cartoonize-batch's retries."""

import random

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


def backoff_s(attempt: int, retry_after: float | None = None, base_s: float = BACKOFF_BASE_S,
              cap_s: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before retry number ``attempt + 1``.

    Exponential from ``base_s``, capped at ``cap_s``, with full jitter over its upper
    half so that clients told to wait together do not come back together; never less
    than the service's Retry-After.
    """
    ceiling = min(cap_s, base_s * 2**attempt)
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after + random.uniform(0.0, base_s))
    return delay
