"""GPU placement: configs/gpu.yaml's Cartoonizers on a CPU head plus one GPU worker."""

import httpx
import pytest
import ray
from ray.util.state import list_actors

from cartoon.model.device import CUDA_CONTEXT_RESERVE_BYTES, memory_fraction

from serve_app.local import deploy_config, free_port
from tests.cluster.conftest import (
    deployment_status,
    gpu_node_config,
    portrait_jpeg,
    running,
    serve_cluster,
    wait_for,
    wait_until_serving,
)

CARTOONIZER_ACTOR = "ServeReplica:cartoon:Cartoonizer"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head with 2 CPUs and no GPU, one worker with 2 CPUs and one (simulated) GPU."""
    with serve_cluster(tmp_path_factory.mktemp("ray"), head_cpus=2, include_dashboard=True) as cluster:
        yield cluster.add_node(num_cpus=2, num_gpus=1), free_port()


def config(port: int, cartoonizers: int, aligners: int = 1) -> dict:
    # Quarter CPUs keep the CPU from being what runs out: only the GPU may.
    return gpu_node_config(port, {
        "Ingress": {"num_replicas": 1},
        "FaceAligner": {"num_replicas": aligners, "ray_actor_options": {"num_cpus": 0.25}},
        "Cartoonizer": {"num_replicas": cartoonizers, "ray_actor_options": {"num_cpus": 0.25}},
        "Postprocessor": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25}},
    })


def cartoonizer_gpus() -> float:
    """The Cartoonizer's num_gpus in configs/gpu.yaml (0.5: two replicas share a GPU)."""
    (app,) = gpu_node_config(port=0, deployments={})["applications"]
    (cartoonizer,) = [d for d in app["deployments"] if d["name"] == "Cartoonizer"]
    return cartoonizer["ray_actor_options"]["num_gpus"]


def cartoonizer_actors() -> list:
    """Every live Cartoonizer replica's actor state."""
    return list_actors(filters=[("class_name", "=", CARTOONIZER_ACTOR), ("state", "=", "ALIVE")], detail=True)


def cartoonizer_nodes() -> dict[str, str]:
    """Actor id -> node id of every live Cartoonizer replica."""
    return {actor.actor_id: actor.node_id for actor in cartoonizer_actors()}


def test_the_gpu_config_splits_a_gpu_between_cartoonizers_whose_memory_caps_fit_it():
    # The design card's fractional replicas: a share that divides a GPU evenly.
    share = cartoonizer_gpus()
    assert 0 < share < 1 and (1 / share).is_integer(), share
    # Each replica's allocator cap plus its CUDA context, summed over the replicas of one
    # GPU, fits it: on an 80 GB H100 and on a 24 GB card.
    for total in (80 * 10**9, 24 * 10**9):
        used = round(1 / share) * (memory_fraction(share, total) * total + CUDA_CONTEXT_RESERVE_BYTES)
        assert used <= total + 1, (total, used)  # bytes: the caps add up to the GPU exactly


def test_a_full_gpu_of_fractional_replicas_all_land_on_the_gpu_node(two_nodes):
    gpu_node, port = two_nodes
    share = cartoonizer_gpus()
    per_gpu = round(1 / share)
    deploy_config(config(port, per_gpu))
    # Replicas load their models at once on two cores shared with other work.
    wait_until_serving(f"http://127.0.0.1:{port}", timeout_s=400)
    wait_for(lambda: running("Cartoonizer") == per_gpu, f"{per_gpu} Cartoonizers running")

    actors = cartoonizer_actors()
    assert len(actors) == per_gpu > 1
    assert {actor.node_id for actor in actors} == {gpu_node.node_id}
    assert [actor.required_resources.get("GPU") for actor in actors] == [share] * per_gpu
    assert ray.available_resources().get("GPU", 0.0) == 0.0


def test_one_replica_over_the_gpu_stays_pending_and_the_status_says_why(two_nodes):
    _, port = two_nodes
    per_gpu = round(1 / cartoonizer_gpus())
    url = f"http://127.0.0.1:{port}"
    deploy_config(config(port, per_gpu))
    wait_for(lambda: running("Cartoonizer") == per_gpu, f"{per_gpu} Cartoonizers running")
    placed = cartoonizer_nodes()

    # One Cartoonizer more than the GPU holds, and a second FaceAligner.
    deploy_config(config(port, per_gpu + 1, aligners=2))
    wait_for(
        lambda: "Resources required for each replica" in deployment_status("Cartoonizer").message,
        "the Cartoonizer's status explains its pending replica",
    )
    status = deployment_status("Cartoonizer")
    assert status.status == "UPSCALING"
    assert status.replica_states == {"RUNNING": per_gpu, "STARTING": 1}
    # "... Resources required for each replica: {...}, total resources available: {...}"
    required, available = status.message.split("total resources available")
    assert f'"GPU": {cartoonizer_gpus()}' in required and "GPU" not in available, status.message
    # The running replicas were neither moved nor restarted.
    assert cartoonizer_nodes() == placed

    # CPU stages scale on their own while the GPU stage waits, and the app serves.
    wait_for(lambda: running("FaceAligner") == 2, "2 FaceAligners running")
    assert deployment_status("FaceAligner").status == "HEALTHY"
    assert httpx.post(f"{url}/v1/cartoonize", content=portrait_jpeg(), timeout=60).status_code == 200
    assert running("Cartoonizer") == per_gpu
