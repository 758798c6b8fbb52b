"""Losing a GPU node under load, and getting one back."""

import time

import httpx
import pytest
from ray.util.state import list_actors

from serve_app.local import deploy_config, free_port
from tests.cluster.conftest import (
    Load,
    deployment_status,
    gpu_node_config,
    portrait_jpeg,
    running,
    serve_cluster,
    wait_for,
    wait_until_serving,
)

CARTOONIZER_ACTOR = "ServeReplica:cartoon:Cartoonizer"
# The app answers 504 after REQUEST_TIMEOUT_S, so a client timeout means a hang.
REQUEST_TIMEOUT_S = 15.0
CLIENT_TIMEOUT_S = 30.0


def add_gpu_node(cluster):
    # No CPUs: every other deployment asks for some, so they all stay on the head,
    # and losing this node loses Cartoonizer replicas only.
    return cluster.add_node(num_cpus=0, num_gpus=1)


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory):
    """A 2-CPU head with every CPU stage, and two GPU nodes with a Cartoonizer each."""
    ray_dir = tmp_path_factory.mktemp("ray")
    with serve_cluster(ray_dir, head_cpus=2, include_dashboard=True) as cluster:
        gpu_nodes = [add_gpu_node(cluster), add_gpu_node(cluster)]
        port = free_port()
        config = gpu_node_config(port, {
            "Ingress": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25}},
            "FaceAligner": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
            "Postprocessor": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
            # Two requests per replica at most, so the load keeps both replicas busy,
            # not only the one that loaded the style first (multiplexed routing). Their
            # four pieces never fill a batch of 8, so each batch waits its full second:
            # a replica under load always holds requests when its node goes.
            "Cartoonizer": {
                "num_replicas": 2,
                "max_replicas_per_node": 1,
                "max_ongoing_requests": 2,
                "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 1.0},
                "ray_actor_options": {"num_cpus": 0},
            },
        })
        config["applications"][0]["args"]["request_timeout_s"] = REQUEST_TIMEOUT_S
        deploy_config(config)
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url)
        wait_for(lambda: running("Cartoonizer") == 2, "2 Cartoonizers running")
        yield cluster, gpu_nodes, url, ray_dir / "session_latest" / "logs" / "serve"


def resends_logged(replica_logs) -> int:
    """Requests the Ingress sent again because the replica working on them died."""
    return sum(path.read_text(errors="replace").count("sending it again")
               for path in replica_logs.glob("replica_cartoon_Ingress_*.log"))


def cartoonizer_nodes() -> set[str]:
    actors = list_actors(filters=[("class_name", "=", CARTOONIZER_ACTOR), ("state", "=", "ALIVE")])
    return {actor.node_id for actor in actors}


def test_losing_a_gpu_node_under_load_loses_no_image_and_a_new_node_restores_it(three_nodes):
    cluster, (lost, kept), url, replica_logs = three_nodes
    assert cartoonizer_nodes() == {lost.node_id, kept.node_id}

    with Load(url, clients=4, timeout_s=CLIENT_TIMEOUT_S) as load:
        wait_for(lambda: load.since(0).count(200) >= 4, "requests served before the node is lost")
        cluster.remove_node(lost)
        wait_for(lambda: running("Cartoonizer") == 1, "Serve notices the lost replica")
        noticed = time.monotonic()
        wait_for(lambda: load.since(noticed).count(200) >= 4, "the remaining replica serves")

    # Requests on the lost replica are sent again by the Ingress (they are idempotent)
    # and served by the other one; a retryable 503 only if none could take them in
    # time; none hangs. The resends (or 503s) show a request really was on the lost node.
    outcomes = load.since(0)
    assert set(outcomes) <= {200, "503 replica_lost"}, outcomes
    wait_for(lambda: resends_logged(replica_logs) > 0 or "503 replica_lost" in outcomes,
             "a request on the lost node sent again", timeout_s=30)
    # Serve starts a replacement, which waits for a node with room for it.
    wait_for(
        lambda: deployment_status("Cartoonizer").replica_states == {"RUNNING": 1, "STARTING": 1},
        "a replacement Cartoonizer pending",
    )

    new = add_gpu_node(cluster)
    wait_for(lambda: running("Cartoonizer") == 2, "a Cartoonizer on the new node")
    assert cartoonizer_nodes() == {kept.node_id, new.node_id}
    assert httpx.post(f"{url}/v1/cartoonize", content=portrait_jpeg(), timeout=CLIENT_TIMEOUT_S).status_code == 200
