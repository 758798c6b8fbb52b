"""One Ray instance and one Serve deployment of serve_config.yaml for the whole session.

The config is deployed the way ``serve run serve_config.yaml`` deploys it (the
controller's ``deploy_apps``), with two extra copies of the app under other route
prefixes whose only overrides are the limits that the 503 and 504 tests need.
"""

import copy
import logging
import socket
import time
from pathlib import Path

import httpx
import pytest
import ray
import yaml
from ray import serve
from ray.serve._private import api as serve_private_api
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]
# Logical CPUs for the session: the main app's replicas need 2 at most, each extra
# app 1.5; the 2-core CI machine runs them all, only more slowly.
RAY_CPUS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_config() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def variant(app: dict, name: str, args: dict, deployment_overrides: dict) -> dict:
    """A copy of the app under /<name>, one replica per deployment, some options changed."""
    copied = copy.deepcopy(app)
    copied["name"], copied["route_prefix"] = name, f"/{name}"
    copied["args"] = {**copied.get("args", {}), **args}
    for deployment in copied["deployments"]:
        deployment["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 1}
        deployment.update(deployment_overrides.get(deployment["name"], {}))
    return copied


@pytest.fixture(scope="session")
def serve_config() -> dict:
    return load_config()


@pytest.fixture(scope="session")
def base_url(serve_config, tmp_path_factory):
    config = copy.deepcopy(serve_config)
    port = free_port()
    config["http_options"]["port"] = port
    app = config["applications"][0]
    config["applications"] += [
        # One request at a time and one waiting: the rest must get 503.
        variant(app, "overloaded", {}, {"FaceAligner": {"max_ongoing_requests": 1, "max_queued_requests": 1}}),
        # A deadline no real photo can meet: 504.
        variant(app, "deadline", {"request_timeout_s": 0.5}, {}),
    ]
    logs = tmp_path_factory.mktemp("ray")
    ray.init(
        num_cpus=RAY_CPUS,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _temp_dir=str(logs),
    )
    schema = ServeDeploySchema(**config)
    # What `serve run serve_config.yaml` does: start Serve, hand the config to the controller.
    client = serve_private_api.serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
    )
    client.deploy_apps(schema)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, [a["route_prefix"] for a in config["applications"]])
    yield url
    serve.shutdown()
    ray.shutdown()


def wait_until_ready(url: str, prefixes: list[str], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(prefixes)
    while pending and time.monotonic() < deadline:
        for prefix in list(pending):
            try:
                if httpx.get(f"{url}{prefix.rstrip('/')}/readyz", timeout=10).status_code == 200:
                    pending.discard(prefix)
            except httpx.HTTPError:
                pass
        time.sleep(1.0)
    if pending:
        raise RuntimeError(f"apps not ready after {timeout_s} s: {sorted(pending)}; status: {serve.status()}")


@pytest.fixture(scope="session")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=120) as session:
        yield session
