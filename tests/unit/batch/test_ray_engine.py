"""``cartoonize-batch --engine ray``'s parts that run without Ray: layout, pool size, the planning thread."""

import threading
import time
from pathlib import PurePosixPath

import pytest
from tqdm import tqdm

from cartoon.batch.files import Location, Planned, Tally
from cartoon.batch.ray_engine import UNET_ACTOR_MEMORY_BYTES, Ledger, RaySettings, _feed, fill_cluster

GIB = 1024**3


@pytest.mark.parametrize(("gpus_per_actor", "layout", "chosen"), [
    (0.0, "auto", "whole"), (0.5, "auto", "staged"), (0.0, "staged", "staged"), (1.0, "whole", "whole"),
])
def test_actors_on_cpus_take_whole_photos_unless_asked_otherwise(gpus_per_actor, layout, chosen):
    assert RaySettings(gpus_per_actor=gpus_per_actor, layout=layout).chosen_layout == chosen


@pytest.mark.parametrize(("settings", "resources", "actors"), [
    # Whole photos on CPUs: one actor per cpus_per_actor, unless memory holds fewer.
    (RaySettings(), {"CPU": 2.0, "memory": 16 * GIB}, 2),
    (RaySettings(cpus_per_actor=2.0), {"CPU": 7.0, "memory": 64 * GIB}, 3),
    (RaySettings(), {"CPU": 16.0, "memory": 5 * GIB}, 5 * GIB // UNET_ACTOR_MEMORY_BYTES),
    # GPUs: one actor per gpus_per_actor, whatever the CPUs.
    (RaySettings(gpus_per_actor=0.5), {"CPU": 64.0, "GPU": 2.0, "memory": 256 * GIB}, 4),
    # Staged on CPUs: one, its tasks take the other CPUs.
    (RaySettings(layout="staged"), {"CPU": 16.0, "memory": 64 * GIB}, 1),
    # A cluster that holds none yet (an autoscaler adds nodes): one, which Ray waits for.
    (RaySettings(gpus_per_actor=1.0), {"CPU": 4.0, "memory": 16 * GIB}, 1),
    # Given: kept.
    (RaySettings(unet_actors=3), {"CPU": 2.0, "memory": 16 * GIB}, 3),
])
def test_the_pool_fills_the_cluster_when_its_size_is_not_given(settings, resources, actors):
    assert fill_cluster(settings, resources).unet_actors == actors


class ListQueue:
    """``ray.util.queue.Queue``'s put, into a list the test reads."""

    def __init__(self):
        self.chunks: list = []

    def put(self, chunk) -> None:
        self.chunks.append(chunk)


def wait_until(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)


def test_planning_hands_over_no_more_than_the_ledger_holds_and_every_photo_once():
    """The driver's bound on the listing: planning waits for photos to come back, and what
    it waits with is already sent (else nothing would ever come back)."""
    pulled = []

    def photos(count: int):
        for index in range(count):
            pulled.append(index)
            yield Planned(PurePosixPath(f"d/p{index}.jpg"), PurePosixPath(f"d/p{index}.png"))

    ledger, queue = Ledger(limit=100), ListQueue()
    feeder = threading.Thread(target=_feed, args=(photos(1000), Location.parse("/in"), Location.parse("/out"), queue,
                                                  ledger, Tally(), tqdm(disable=True)), daemon=True)
    feeder.start()
    wait_until(lambda: len(ledger.rows) == 100)
    time.sleep(0.2)  # room for planning to run ahead, if it could

    assert len(pulled) == 101  # 100 out, one waiting for room
    assert sum(map(len, queue.chunks)) == 100

    sent, taken = [], 0
    while None not in queue.chunks[:taken]:  # Ray Data's side: each photo taken and brought back
        wait_until(lambda: len(queue.chunks) > taken)
        chunk, taken = queue.chunks[taken], taken + 1
        for row in chunk or []:
            sent.append(row["relative"])
            assert ledger.back(row["relative"])
    feeder.join(timeout=30)

    assert sent == [f"d/p{index}.jpg" for index in range(1000)]
    assert ledger.rows == {} and ledger.handed_over == 1000
    assert queue.chunks[-1] is None
