"""The Cartoonizer's batch-wait tuner, launch counter and simulated forward (no Ray)."""

import re
import time
from pathlib import Path

import numpy as np
import pytest

from deployments.batching import BatchWaitTuner, LaunchCounter
from deployments.simulated import SimulatedStylizer

ROOT = Path(__file__).resolve().parents[3]
HEAD = ("head", 288, 288, 3)
TILE = ("background", 512, 512, 3)


def gpu_like(tuner: BatchWaitTuner, shape: tuple, fixed_s: float, per_piece_s: float) -> None:
    for size in (1, 3, 8, 5, 2):
        tuner.observe(shape, size, fixed_s + per_piece_s * size)


def test_wait_is_the_full_batch_forward_of_every_active_shape_when_batching_pays():
    tuner = BatchWaitTuner(max_batch_size=32, configured_wait_s=0.01, adaptive=True, max_wait_s=10.0)
    assert tuner.wait_s() == 0.01  # nothing measured yet
    gpu_like(tuner, HEAD, 0.004, 0.0004)
    assert tuner.cost(HEAD).fixed_s == pytest.approx(0.004)
    assert tuner.wait_s() == pytest.approx(0.004 + 32 * 0.0004)
    gpu_like(tuner, TILE, 0.006, 0.001)
    # Heads and tiles take turns on one model: a batch of each per cycle.
    assert tuner.wait_s() == pytest.approx(0.004 + 32 * 0.0004 + 0.006 + 32 * 0.001)


def test_no_wait_where_the_per_piece_cost_is_flat_and_a_cap_otherwise():
    cpu = BatchWaitTuner(max_batch_size=8, configured_wait_s=0.02, adaptive=True, max_wait_s=1.0)
    gpu_like(cpu, TILE, 0.0, 0.2)  # a CPU: eight pieces cost eight times one
    assert cpu.wait_s() == 0.0
    capped = BatchWaitTuner(max_batch_size=32, configured_wait_s=0.02, adaptive=True, max_wait_s=0.01)
    gpu_like(capped, HEAD, 0.004, 0.0004)
    assert capped.wait_s() == 0.01
    fixed = BatchWaitTuner(max_batch_size=32, configured_wait_s=0.02, adaptive=False, max_wait_s=1.0)
    gpu_like(fixed, HEAD, 0.004, 0.0004)
    assert fixed.wait_s() == 0.02


def test_split_launches_are_those_that_left_waiting_pieces_of_their_kind_behind():
    counter = LaunchCounter()
    counter.arrived("head", [1, 2, 3])
    counter.arrived("background", [4])
    counter.launched("head", [1, 2], max_batch_size=4)  # 3 waits behind: split
    counter.launched("background", [4], max_batch_size=4)  # nothing of its kind waits
    counter.launched("head", [3], max_batch_size=4)
    counter.arrived("head", [5, 6, 7, 8, 9])
    counter.launched("head", [5, 6, 7, 8], max_batch_size=4)  # full: never split
    counter.forget("head", [9])  # its request timed out
    counter.arrived("head", [10])
    counter.launched("head", [10], max_batch_size=4)
    assert counter.snapshot() == {"launches": 5, "pieces": 9, "split_launches": 1}


def test_simulated_forward_sleeps_its_cost_and_returns_the_pieces(tmp_path):
    stylizer = SimulatedStylizer(fixed_ms=20.0, ms_per_megapixel=100.0, device_lock=str(tmp_path / "gpu"))
    pieces = np.zeros((4, 500, 500, 3), np.uint8)  # 1 Mpx: 20 + 100 ms
    assert stylizer.seconds(pieces) == pytest.approx(0.12)
    start = time.perf_counter()
    assert stylizer.run(pieces, "background") is pieces
    assert time.perf_counter() - start >= 0.12
    assert "SIMULATED" in stylizer.mode.describe()["reason"]


def test_simulated_forward_offers_what_the_cartoonizer_reads_from_a_stylizer(tmp_path):
    stylizer = SimulatedStylizer(fixed_ms=1.0, ms_per_megapixel=1.0, device_lock=None)
    source = (ROOT / "deployments" / "cartoonizer.py").read_text()
    # Every attribute the Cartoonizer reads off the stylizer it holds (a real one or this one).
    read = set(re.findall(r"\bstylizer\.([a-z_]+)", source))
    assert read, "the Cartoonizer no longer names its stylizer 'stylizer'; update this test"
    missing = sorted(name for name in read if not hasattr(stylizer, name))
    assert not missing, f"SimulatedStylizer lacks {missing}: a simulated graph would answer 500"
