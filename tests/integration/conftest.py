"""One Ray instance and one Serve deployment of serve_config.yaml for all integration tests.

The config is deployed the way ``serve run serve_config.yaml`` deploys it
(``serve_app.local.deploy_config``), with extra copies of the app under other route
prefixes whose only overrides are what the 503, 504, access-control and fault tests need,
and one whose ``styles_dir`` holds the default styles plus a DCT-Net fixture converted by
``python -m cartoon.model.dctnet``.
"""

import copy
import logging
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
import ray
import yaml
from ray import serve

from cartoon.model.dctnet import convert
from cartoon.image.styles import DEFAULT_STYLES_DIR
from serve_app.local import deploy_config, free_port

ROOT = Path(__file__).resolve().parents[2]
# Logical CPUs for the session: the main app's replicas need 2 at most, each extra
# app 1.5; the 2-core CI machine runs them all, only more slowly.
RAY_CPUS = 11
DCTNET_FIXTURE = ROOT / "tests" / "fixtures" / "dctnet" / "addv2"
DCTNET_STYLE = "dctnet-fixture"
OVERLOADED_RETRY_AFTER_S = 7
BATCHING_USER_CONFIG = {"max_batch_size": 4, "batch_wait_timeout_s": 1.0}
API_KEY = "integration-test-key-6f1c"
ALLOWED_ORIGIN = "https://cartoon.example.com"
# The video jobs app's limits, small enough for the test clips to cross them.
# How long a runner of the "scaling" app finishes its job once told to stop: shorter
# than the test clip's job on any machine, so the job is handed back.
SCALING_SHUTDOWN_S = 2.0
JOBS_LIMITS = {"max_video_bytes": 400_000, "max_video_seconds": 3.0, "max_video_pixels": 120_000,
               "job_lost_after_s": 3.0}


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


@pytest.fixture(scope="package")
def ray_temp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="package")
def replica_logs(base_url, ray_temp_dir) -> Path:
    """The directory holding the Serve replicas' log files."""
    return ray_temp_dir / "session_latest" / "logs" / "serve"


@pytest.fixture(scope="session")
def serve_config() -> dict:
    return load_config()


@pytest.fixture(scope="package")
def dctnet_styles_dir(tmp_path_factory) -> Path:
    """The default styles plus the DCT-Net fixture, converted as a user would."""
    directory = tmp_path_factory.mktemp("dctnet_styles")
    shutil.copytree(DEFAULT_STYLES_DIR, directory, dirs_exist_ok=True)
    convert(DCTNET_FIXTURE, DCTNET_STYLE, directory, licence="Apache License 2.0", source="tools/dctnet_fixture.py")
    return directory


# Package scope: one Ray for all integration tests, shut down before tests/cluster
# starts clusters of its own, whichever order the two run in.
@pytest.fixture(scope="package")
def served(serve_config, tmp_path_factory, dctnet_styles_dir, ray_temp_dir):
    """The URL of the apps and the config deployed (a test that redeploys starts from it)."""
    config = copy.deepcopy(serve_config)
    port = free_port()
    config["http_options"]["port"] = port
    key_file = tmp_path_factory.mktemp("secrets") / "api-key"
    key_file.write_text(API_KEY + "\n")
    app = config["applications"][0]
    app.setdefault("args", {})["jobs_dir"] = str(tmp_path_factory.mktemp("jobs"))
    config["applications"] += [
        # One image admitted at a time, one request at a time and one waiting in the
        # FaceAligner: the rest must get 503, with this Retry-After (not the default,
        # so the header is seen to come from the config).
        variant(app, "overloaded", {"retry_after_s": OVERLOADED_RETRY_AFTER_S, "min_in_flight": 1,
                                    "max_in_flight": 1},
                {"FaceAligner": {"max_ongoing_requests": 1, "max_queued_requests": 1}}),
        # A batch wait long enough that pieces of concurrent requests surely meet in one
        # batch, as a GPU config's wait makes them: the CPU config waits for nothing.
        variant(app, "batching", {}, {"Cartoonizer": {"user_config": BATCHING_USER_CONFIG}}),
        # A deadline no real photo can meet: 504.
        variant(app, "deadline", {"request_timeout_s": 0.5}, {}),
        # A converted DCT-Net style served next to the default ones.
        variant(app, "dctnet", {"styles_dir": str(dctnet_styles_dir)}, {}),
        # Untouched until the burst test: its Ingress has measured nothing when the
        # burst arrives, as after a fresh `serve run`.
        variant(app, "fresh", {}, {}),
        # An API key from a file and one CORS origin; its replicas are also the ones
        # the fault tests kill.
        variant(app, "guarded", {"api_key_file": str(key_file), "cors_origins": [ALLOWED_ORIGIN]}, {}),
        # Video jobs with small limits, a short heartbeat and one attempt each, in a
        # folder of their own named by a file:// URI (the store through pyarrow's URIs);
        # its replicas are the ones the video fault tests kill.
        variant(app, "jobs", {"jobs_dir": tmp_path_factory.mktemp("small_jobs").as_uri(), **JOBS_LIMITS,
                              "job_max_attempts": 1}, {}),
        # Two runners that finish what they run within SCALING_SHUTDOWN_S of being told to
        # stop, else hand it back: the downscale test takes one of them away.
        variant(app, "scaling", {"jobs_dir": str(tmp_path_factory.mktemp("scaling_jobs")),
                                 "job_shutdown_s": SCALING_SHUTDOWN_S, "job_lost_after_s": 3.0},
                {"VideoJobRunner": {"autoscaling_config": {"min_replicas": 2, "max_replicas": 2}}}),
    ]
    if only := os.environ.get("CARTOON_TEST_APPS"):
        # A few tests on a busy machine: only the apps they use (names, comma-separated).
        config["applications"] = [a for a in config["applications"] if a["name"] in only.split(",")]
    ray.init(
        num_cpus=RAY_CPUS,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _temp_dir=str(ray_temp_dir),
    )
    deploy_config(config)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, [a["route_prefix"] for a in config["applications"]])
    yield url, config
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="package")
def base_url(served) -> str:
    return served[0]


# Six apps start on 2 cores: under a loaded machine (other test runs) 300 s were
# seen not to suffice; a healthy start takes 2-3 minutes.
def wait_until_ready(url: str, prefixes: list[str], timeout_s: float = 900.0) -> None:
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


@pytest.fixture(scope="package")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=120) as session:
        yield session
