"""How long the Cartoonizer's batches wait to fill, learnt from its own forward passes.

Serve 2.60's ``@serve.batch`` forms the next batch while the model still runs the
previous one, and closes it after ``batch_wait_timeout_s``. Batches fill when that wait
matches the time the model needs for one full batch of every kind it alternates
between: the next batches then collect for as long as the model is busy, and a load of
x% of capacity brings batches of about x% of ``max_batch_size``. Where batching buys
nothing (a CPU: the per-piece cost is flat in the batch size) the wait only adds
latency, so it is zero.
"""

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

# A full batch must cost at most this share of as many single-piece forwards for the
# wait to be worth it (GPU: ~0.1; CPU: ~1.0, docs/BENCHMARKS.md).
BATCHING_PAYS_BELOW = 0.5
# Shapes not seen for this long no longer count as sharing the model.
ACTIVE_SHAPE_S = 10.0
SAMPLES_PER_SHAPE = 64


@dataclass(frozen=True)
class ForwardCost:
    """Seconds = fixed + per_piece * batch size, fitted for one (kind, shape)."""

    fixed_s: float
    per_piece_s: float

    def seconds(self, size: int) -> float:
        return self.fixed_s + self.per_piece_s * size


class BatchWaitTuner:
    """Fits each shape's forward cost from measured batches and derives the batch wait.

    Args:
        max_batch_size: pieces per forward.
        configured_wait_s: the wait used until two batch sizes of a shape were measured,
            and always when ``adaptive`` is False.
        adaptive: derive the wait from the measurements.
        max_wait_s: upper bound of the derived wait.
    """

    def __init__(self, max_batch_size: int, configured_wait_s: float, adaptive: bool, max_wait_s: float):
        self.max_batch_size = max_batch_size
        self.configured_wait_s = configured_wait_s
        self.adaptive = adaptive
        self.max_wait_s = max_wait_s
        self._samples: dict[tuple, deque] = {}
        self._last_seen: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def observe(self, shape: tuple, size: int, seconds: float) -> None:
        """Records one forward pass of ``size`` pieces of ``shape`` (kind, height, width)."""
        with self._lock:
            self._samples.setdefault(shape, deque(maxlen=SAMPLES_PER_SHAPE)).append((size, seconds))
            self._last_seen[shape] = time.monotonic()

    def shapes(self) -> list[tuple]:
        """Every shape measured so far."""
        with self._lock:
            return list(self._samples)

    def cost(self, shape: tuple) -> ForwardCost | None:
        """The fitted cost of ``shape``, or None before two different sizes were measured."""
        with self._lock:
            samples = list(self._samples.get(shape, ()))
        sizes = np.array([size for size, _ in samples], float)
        if len(set(sizes)) < 2:
            return None
        seconds = np.array([s for _, s in samples], float)
        per_piece, fixed = np.polyfit(sizes, seconds, 1)
        return ForwardCost(max(0.0, float(fixed)), max(0.0, float(per_piece)))

    def wait_s(self) -> float:
        """The batch wait: the full-batch forward time of every active shape, summed.

        Zero when no active shape gains from batching; the configured wait until the
        costs are known.
        """
        if not self.adaptive:
            return self.configured_wait_s
        now = time.monotonic()
        with self._lock:
            active = [shape for shape, seen in self._last_seen.items() if now - seen <= ACTIVE_SHAPE_S]
        costs = [cost for cost in map(self.cost, active) if cost is not None]
        if not costs:
            return self.configured_wait_s
        full = [cost.seconds(self.max_batch_size) for cost in costs]
        pays = any(
            cost.seconds(self.max_batch_size) <= BATCHING_PAYS_BELOW * self.max_batch_size * cost.seconds(1)
            for cost in costs
        )
        return min(self.max_wait_s, sum(full)) if pays else 0.0


class LaunchCounter:
    """Counts forward launches, and those made smaller than they could have been.

    A launch is *split* when it starts with fewer than ``max_batch_size`` pieces while
    pieces of the same kind were already waiting behind the busy model: they could
    have ridden along. ``@serve.batch`` makes such launches when it closes batches
    early; a well-sized wait makes few. Pieces are tracked by token, so a request that
    fails or times out leaves no stale count behind.
    """

    def __init__(self):
        self.launches = 0
        self.pieces = 0
        self.split_launches = 0
        self._waiting: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def arrived(self, kind: str, tokens: list[int]) -> None:
        """Pieces of ``kind`` now wait for the model."""
        with self._lock:
            self._waiting.setdefault(kind, set()).update(tokens)

    def launched(self, kind: str, tokens: list[int], max_batch_size: int) -> None:
        """A forward of these pieces of ``kind`` starts now."""
        with self._lock:
            waiting = self._waiting.setdefault(kind, set())
            waiting.difference_update(tokens)
            self.launches += 1
            self.pieces += len(tokens)
            if len(tokens) < max_batch_size and waiting:
                self.split_launches += 1

    def forget(self, kind: str, tokens: list[int]) -> None:
        """These pieces no longer wait (launched, or their request ended)."""
        with self._lock:
            self._waiting.setdefault(kind, set()).difference_update(tokens)

    def snapshot(self) -> dict:
        with self._lock:
            return {"launches": self.launches, "pieces": self.pieces, "split_launches": self.split_launches}
