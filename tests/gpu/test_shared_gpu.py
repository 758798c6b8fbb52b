"""Four quarter-GPU replicas on one real GPU: each capped, all filled at once, and served.

First four plain Ray actors with ``num_gpus=0.25`` run what a Cartoonizer replica runs
at start (device from Ray's assignment, memory cap from its share), then fill their
caps at the same time: if caps plus contexts overcommitted the GPU, an allocation
would fail below a cap. Full, each must answer a batch with the typed out-of-memory
error (the ingress's 503), and serve again once the memory is freed. Then
configs/gpu.yaml itself, four Cartoonizers on the GPU, answers real HTTP requests.
"""

import copy
import logging
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
import yaml
from ray import serve

from serve_app.local import deploy_config, free_port
from tests import photos
from tests.gpu import requires_cuda

pytestmark = requires_cuda

ROOT = Path(__file__).resolve().parents[2]
SHARE = 0.25
BLOCK = 256 << 20


@pytest.fixture(scope="module")
def one_gpu_ray(tmp_path_factory):
    ray.init(num_cpus=8, num_gpus=1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    serve.shutdown()
    ray.shutdown()


@ray.remote(num_gpus=SHARE, num_cpus=1)
class QuarterReplica:
    """What Cartoonizer.__init__ does with its GPU, plus ways to fill and probe it."""

    def __init__(self):
        import torch

        from cartoon.model.device import cap_memory, resolve_device
        from cartoon.image.styles import StyleRegistry, Stylizer

        context = ray.get_runtime_context()
        self.device = resolve_device("auto", context.get_accelerator_ids().get("GPU", []))
        self.fraction = cap_memory(self.device, context.get_assigned_resources().get("GPU", 0.0))
        self.total = torch.cuda.get_device_properties(self.device).total_memory
        registry = StyleRegistry.from_directory()
        self.stylizer = Stylizer.from_style(registry.get(registry.default), self.device)
        self.held = []

    def describe(self) -> dict:
        return {"device": str(self.device), "fraction": self.fraction, "total": self.total}

    def fill(self) -> int:
        import torch

        try:
            while True:
                self.held.append(torch.empty(BLOCK, dtype=torch.uint8, device=self.device))
        except torch.OutOfMemoryError:
            pass
        return len(self.held) * BLOCK

    def release(self) -> None:
        import torch

        self.held.clear()
        torch.cuda.empty_cache()

    def stylize(self, heads: np.ndarray) -> str:
        from cartoon.errors import DeviceOutOfMemoryError

        try:
            out = self.stylizer.run(heads, "head")
        except DeviceOutOfMemoryError:
            return "out_of_memory"
        return f"ok {out.shape[0]}"


def test_four_quarter_replicas_fill_their_caps_together(one_gpu_ray):
    replicas = [QuarterReplica.remote() for _ in range(round(1 / SHARE))]
    described = ray.get([replica.describe.remote() for replica in replicas], timeout=300)
    for found in described:
        assert found["device"] == "cuda:0"
        assert found["fraction"] < SHARE
    heads = np.stack([photos.astronaut()[:288, 112:400]] * 16)
    assert ray.get([r.stylize.remote(heads) for r in replicas], timeout=120) == ["ok 16"] * 4

    held = ray.get([replica.fill.remote() for replica in replicas], timeout=300)
    for found, amount in zip(described, held):
        cap = found["fraction"] * found["total"]
        # Below the cap by the model's weights and a block at most.
        assert cap - 2 * BLOCK <= amount <= cap, (amount, cap)
    assert ray.get([r.stylize.remote(heads) for r in replicas], timeout=120) == ["out_of_memory"] * 4

    ray.get([replica.release.remote() for replica in replicas], timeout=60)
    assert ray.get([r.stylize.remote(heads) for r in replicas], timeout=120) == ["ok 16"] * 4
    for replica in replicas:
        ray.kill(replica)


def test_the_gpu_config_serves_with_four_quarter_gpu_cartoonizers(one_gpu_ray):
    """configs/gpu.yaml gives two Cartoonizers half the GPU each; split four ways (its other choice) it must serve."""
    config = yaml.safe_load((ROOT / "configs" / "gpu.yaml").read_text())
    port = free_port()
    config["http_options"].update(host="127.0.0.1", port=port)
    (app,) = config["applications"]
    for deployment in app["deployments"]:
        deployment.pop("autoscaling_config", None)
        replicas = round(1 / SHARE) if deployment["name"] == "Cartoonizer" else 1
        deployment["num_replicas"] = replicas
        if deployment["name"] == "Cartoonizer":
            deployment["ray_actor_options"]["num_gpus"] = SHARE
    deploy_config(copy.deepcopy(config))
    url = f"http://127.0.0.1:{port}"
    body = photos.encode(photos.astronaut(), "JPEG")
    deadline = time.monotonic() + 240
    while not serving(url, body):
        assert time.monotonic() < deadline, f"not serving with four Cartoonizers: {serve.status()}"
        time.sleep(2)
    with httpx.Client(base_url=url, timeout=120) as client:
        assert [client.post("/v1/cartoonize", content=body).status_code for _ in range(8)] == [200] * 8
    if shutil.which("nvidia-smi"):  # each CUDA replica is a process on the GPU
        listed = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.split()
        assert len(listed) >= 4, listed


def serving(url: str, body: bytes) -> bool:
    """Four Cartoonizers running and one cartoon back."""
    status = serve.status().applications.get("cartoon")
    if status is None or status.deployments["Cartoonizer"].replica_states != {"RUNNING": 4}:
        return False
    try:
        return httpx.post(f"{url}/v1/cartoonize", content=body, timeout=60).status_code == 200
    except httpx.HTTPError:
        return False
