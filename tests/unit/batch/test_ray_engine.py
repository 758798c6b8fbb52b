"""``cartoonize-batch --engine ray``'s choices made before Ray runs anything: layout and pool size."""

import pytest

from cartoon.batch.ray_engine import UNET_ACTOR_MEMORY_BYTES, RaySettings, fill_cluster

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

