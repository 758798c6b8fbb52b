"""Simulated multi-node clusters: several raylets on this machine, one Serve app on them.

Each test module starts its own ``ray.cluster_utils.Cluster`` through ``serve_cluster``
and tears it down before the next module starts one. Nodes declare logical CPUs and
GPUs; a GPU here is bookkeeping only: the Cartoonizer's torch code runs on the CPU
(``device: cpu``) while Ray places its replicas by their ``num_gpus``. The app is
configs/gpu.yaml, scaled down to fit, deployed the way ``serve run`` deploys it.
"""

import asyncio
import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import ray
import yaml
from ray import serve
from ray.cluster_utils import Cluster
from ray.serve.schema import DeploymentStatusOverview

from serve_app.local import free_port
from tests import photos

ROOT = Path(__file__).resolve().parents[2]
APP = "cartoon"

# Serve reads these when its controller and replicas start, so they must be in the
# environment of the raylets that spawn them. Replicas pending for want of resources
# are reported in the deployment's status message after SLOW_STARTUP_WARNING_S; the
# default (30 s) would make the pending-replica test wait that long.
SERVE_ENV = {
    "RAY_SERVE_SLOW_STARTUP_WARNING_S": "2",
    "RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S": "2",
}
# A dead node is noticed after health_check_period_ms * failure_threshold; the
# defaults take about 15 s, most of a test's time here.
HEAD_SYSTEM_CONFIG = {
    "health_check_period_ms": 1000,
    "health_check_failure_threshold": 5,
    "metrics_report_interval_ms": 1000,
}


@contextmanager
def serve_cluster(temp_dir: Path, head_cpus: float, include_dashboard: bool = False,
                  head_resources: dict[str, float] | None = None,
                  serve_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A connected Ray cluster with a CPU-only head; shut down, Serve included, on exit.

    Args:
        temp_dir: Ray's session directory, private to this cluster: with the default
            one, a plain ``ray.init()`` elsewhere on this machine would join it.
        head_cpus: logical CPUs of the head node; it holds no GPU.
        include_dashboard: start the dashboard, which ``ray.util.state`` queries.
        head_resources: custom resources of the head, to pin replicas there.
        serve_env: more of Serve's environment variables, beyond ``SERVE_ENV``.

    Yields:
        The cluster; add worker nodes with ``cluster.add_node(num_cpus=..., num_gpus=...)``.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**SERVE_ENV, **(serve_env or {})}.items():
            patch.setenv(name, value)
        cluster = Cluster()
        try:
            cluster.add_node(
                num_cpus=head_cpus,
                num_gpus=0,
                resources=head_resources or {},
                temp_dir=str(temp_dir),
                include_dashboard=include_dashboard,
                # Not the default 8265: another Ray on this machine may hold it.
                dashboard_port=free_port(),
                _system_config=HEAD_SYSTEM_CONFIG,
            )
            ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
            yield cluster
        finally:
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
            cluster.shutdown()


# What a test leaves unsaid: one video job runner with no CPU of its own, so the
# file's two-core runner does not keep a small simulated node from being ready.
SCALED_DOWN = {"VideoJobRunner": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}}


def gpu_node_config(port: int, deployments: dict[str, dict]) -> dict:
    """configs/gpu.yaml on localhost with the proxy on the head, the torch code on the CPU.

    Args:
        port: the HTTP port of the head's proxy.
        deployments: per deployment name, options that replace the file's; a
            ``num_replicas`` drops the deployment's autoscaling_config.

    Returns:
        A Serve config dict.
    """
    deployments = {**SCALED_DOWN, **deployments}
    config = yaml.safe_load((ROOT / "configs" / "gpu.yaml").read_text())
    # Every simulated node shares 127.0.0.1, so only one proxy can hold the port.
    config["proxy_location"] = "HeadOnly"
    config["http_options"].update(host="127.0.0.1", port=port)
    (app,) = config["applications"]
    app["args"]["device"] = "cpu"
    for deployment in app["deployments"]:
        overrides = copy.deepcopy(deployments.get(deployment["name"], {}))
        if "num_replicas" in overrides:
            deployment.pop("autoscaling_config", None)
        actor_options = overrides.pop("ray_actor_options", {})
        deployment.setdefault("ray_actor_options", {}).update(actor_options)
        deployment.update(overrides)
    return config


def deployment_status(name: str) -> DeploymentStatusOverview:
    return serve.status().applications[APP].deployments[name]


def running(name: str) -> int:
    return deployment_status(name).replica_states.get("RUNNING", 0)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 180.0, period_s: float = 0.5) -> None:
    """Polls ``condition`` until it holds; fails naming ``what`` and Serve's status otherwise."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}; status: {serve.status()}")
        time.sleep(period_s)


def scrape_metrics() -> list[str]:
    """Every sample line of every live node's Prometheus endpoint."""
    lines = []
    for node in ray.nodes():
        if node["Alive"]:
            address = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
            text = httpx.get(address, timeout=10).text
            lines += [line for line in text.splitlines() if line and not line.startswith("#")]
    return lines


def portrait_jpeg() -> bytes:
    """A 256 px crop of the astronaut with her face: one face, one small background."""
    return photos.encode(photos.astronaut()[:256, 96:352], "JPEG")


def wait_until_serving(url: str, timeout_s: float = 240.0) -> None:
    """Waits for /readyz, then for one real cartoonization to come back 200."""

    def serving() -> bool:
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
                return False
            return httpx.post(f"{url}/v1/cartoonize", content=portrait_jpeg(), timeout=60).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(serving, f"{url} serves a cartoon", timeout_s, period_s=1.0)


class Load:
    """Bounded concurrent traffic from a background thread: ``clients`` loops of requests.

    Every outcome is kept with the time it came back: 200, "<status> <error code>",
    or the name of a client-side error (``ReadTimeout``: a request hung past ``timeout_s``).
    """

    def __init__(self, url: str, clients: int, body: bytes | None = None, timeout_s: float = 30.0):
        self.url, self.clients, self.timeout_s = url, clients, timeout_s
        self.body = portrait_jpeg() if body is None else body
        self.outcomes: list[tuple[float, int | str]] = []  # (time.monotonic(), outcome)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    async def _client(self, session: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            try:
                response = await session.post("/v1/cartoonize", content=self.body)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            else:
                outcome = 200 if response.status_code == 200 else f"{response.status_code} {_error_code(response)}"
            self.outcomes.append((time.monotonic(), outcome))

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout_s) as session:
            await asyncio.gather(*(self._client(session) for _ in range(self.clients)))

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # re-raised in the test's thread by stop()
            self._error = exc

    def since(self, moment: float) -> list[int | str]:
        """Outcomes of the requests that came back after ``moment`` (``time.monotonic()``)."""
        return [outcome for at, outcome in list(self.outcomes) if at > moment]

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        """Lets every client finish its request in flight, then returns."""
        self._stop.set()
        # Each request ends within the client timeout, so this join is bounded.
        self._thread.join()
        if self._error is not None:
            raise self._error


def _error_code(response: httpx.Response) -> str:
    """The API's error code, or the start of a body that is not the API's JSON error."""
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return response.text[:80]
