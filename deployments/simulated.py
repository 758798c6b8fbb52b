"""BENCHMARKS AND TESTS ONLY: a stand-in for the UNet that costs what a GPU forward costs.

Selected by ``AppArgs.simulated_forward``; never set in a shipped config. It lets the
batching of the real Serve graph be measured on a machine without a GPU: the forward
is a sleep (as a GPU forward is, seen from the CPU thread that waits for it) of
``fixed_ms + ms_per_megapixel * pixels of the batch``, and returns the pieces unchanged.
Replicas given the same ``device_lock`` file take turns, as replicas sharing one GPU do.
"""

import fcntl
import time
from contextlib import contextmanager

import numpy as np
import torch

from cartoon.model.inference import InferenceMode


class SimulatedStylizer:
    """``Stylizer.run``'s signature and cost shape, without a model."""

    def __init__(self, fixed_ms: float, ms_per_megapixel: float, device_lock: str | None):
        self.fixed_ms = fixed_ms
        self.ms_per_megapixel = ms_per_megapixel
        self.device_lock = device_lock
        self.paste_mask = None  # pieces are pasted back with the default ellipse, as a native style's
        self.mode = InferenceMode(
            torch.device("cpu"), "fp32", False,
            f"SIMULATED forward for benchmarks: {fixed_ms} ms + {ms_per_megapixel} ms/Mpx, no model",
        )

    def seconds(self, pieces: np.ndarray) -> float:
        """What a forward of these (B, H, W, 3) pieces costs."""
        return (self.fixed_ms + self.ms_per_megapixel * pieces.shape[0] * pieces.shape[1] * pieces.shape[2] / 1e6) / 1e3

    @contextmanager
    def _device(self):
        if self.device_lock is None:
            yield
            return
        with open(self.device_lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def run(self, pieces: np.ndarray, kind: str, finished=None) -> np.ndarray:
        with self._device():
            time.sleep(self.seconds(pieces))
        return pieces
