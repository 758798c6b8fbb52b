"""Autoscaling of the CPU stages under load, and the service's own metrics."""

import re
import time

import httpx
import numpy as np
import pytest

from deployments import metrics
from serve_app.local import deploy_config, free_port
from tests import photos
from tests.cluster.conftest import (
    Load,
    deployment_status,
    gpu_node_config,
    portrait_jpeg,
    running,
    scrape_metrics,
    serve_cluster,
    wait_for,
    wait_until_serving,
)

# The production delays (seconds to minutes) shrunk so that a scale-up and a
# scale-down each take seconds; the handles push metrics twice per look-back window.
FAST_AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 1,
    "downscale_delay_s": 2,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 1,
}
CPU_STAGES = ("FaceAligner", "Postprocessor")
STAGES = metrics.ALIGNER_STAGES + metrics.CARTOONIZER_STAGES + metrics.POSTPROCESSOR_STAGES


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """The app on a 2-CPU head and a GPU node; the CPU stages autoscale from one replica.

    A 64 px background and no face leave the UNet little to do, so the CPU stages
    (decoding, detecting on, composing and encoding a large photo) are the bottleneck.
    """
    with serve_cluster(tmp_path_factory.mktemp("ray"), head_cpus=2) as cluster:
        cluster.add_node(num_cpus=1, num_gpus=1)
        port = free_port()
        cpu_stage = {
            "max_ongoing_requests": 2,
            "autoscaling_config": FAST_AUTOSCALING,
            "ray_actor_options": {"num_cpus": 0.25},
        }
        config = gpu_node_config(port, {
            "Ingress": {"num_replicas": 1},
            "FaceAligner": cpu_stage,
            "Postprocessor": cpu_stage,
            # It autoscales as fast, but 8 clients never bring it its target of 16
            # requests: it must stay at one replica while the CPU stages scale.
            "Cartoonizer": {
                "autoscaling_config": {**FAST_AUTOSCALING, "max_replicas": 4, "target_ongoing_requests": 16},
                "ray_actor_options": {"num_cpus": 0.25},
            },
        })
        config["applications"][0]["args"].update(process_side=64, tile=0)
        deploy_config(config)
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url)
        yield url


def large_faceless_jpeg() -> bytes:
    """The coffee cup tiled 2 x 2: 1200 x 800 px, no face."""
    return photos.encode(np.ascontiguousarray(np.tile(photos.coffee(), (2, 2, 1))), "JPEG")


def test_cpu_stages_scale_up_under_load_and_back_down_after_with_every_request_200(url):
    cartoonizer_states = []

    def cpu_stage_replicas() -> set[int]:
        # Sampled all along: the Cartoonizer must not follow the CPU stages.
        cartoonizer_states.append(deployment_status("Cartoonizer").replica_states)
        return {running(name) for name in CPU_STAGES}

    body = large_faceless_jpeg()
    with Load(url, clients=8, body=body) as load:
        wait_for(lambda: min(cpu_stage_replicas()) > 1, "both CPU stages scaled up under load")
    # A trickle keeps requests in flight while the extra replicas drain and stop.
    with Load(url, clients=1, body=body) as trickle:
        wait_for(lambda: cpu_stage_replicas() == {1}, "one replica per CPU stage again")
        scaled_down = time.monotonic()
        wait_for(lambda: len(trickle.since(scaled_down)) >= 3, "requests after the scale-down")

    outcomes = load.since(0) + trickle.since(0)
    assert set(outcomes) == {200}, outcomes
    assert all(states == {"RUNNING": 1} for states in cartoonizer_states), cartoonizer_states


def test_stage_batch_face_and_error_metrics_reach_prometheus(url):
    assert httpx.post(f"{url}/v1/cartoonize", content=portrait_jpeg(), timeout=60).status_code == 200
    assert httpx.post(f"{url}/v1/cartoonize", content=b"not an image", timeout=60).status_code == 400
    # Prometheus sample lines, e.g. ray_cartoon_stage_latency_ms_count{...,stage="detect"} 12.0
    patterns = [
        *(rf'ray_{metrics.STAGE_LATENCY}_count{{.*stage="{stage}"' for stage in STAGES),
        rf'ray_{metrics.UNET_BATCH_SIZE}_count{{.*deployment="Cartoonizer".*kind="head"',
        rf'ray_{metrics.FACES_PER_IMAGE}_count{{.*deployment="FaceAligner"',
        rf'ray_{metrics.HTTP_ERRORS}_total{{.*code="not_an_image".*status="400"',
    ]
    missing = patterns

    def exported() -> bool:
        nonlocal missing
        lines = scrape_metrics()
        missing = [pattern for pattern in missing if not any(re.match(pattern, line) for line in lines)]
        return not missing

    wait_for(exported, "every metric exported", timeout_s=60)
