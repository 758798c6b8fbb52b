"""One Ray instance and one Serve app for the live tests: serve_config.yaml's app, as
``serve run`` deploys it, with an API key, small live bounds and a batch wait.

Its own package, so its Ray starts alone: the live tests need one app, not the seven of
tests/integration (whose start outlasts a test's time limit on a loaded 2-core machine).
"""

import copy
import logging

import pytest
import ray
from ray import serve

from serve_app.local import deploy_config, free_port
from tests.integration.conftest import API_KEY, load_config, variant, wait_until_ready

# Logical CPUs: the app's four replicas need 2 at most.
RAY_CPUS = 2
# At most two sessions in all (three per replica, so the total bound is the one met),
# short timeouts, and a batch wait so two sessions' pieces meet in one batch.
LIVE_LIMITS = {"live_sessions_per_replica": 3, "live_sessions_total": 2, "live_max_frame_bytes": 150_000,
               "live_send_timeout_s": 2.0, "live_idle_timeout_s": 20.0}
LIVE_USER_CONFIG = {"max_batch_size": 4, "batch_wait_timeout_s": 0.3}
PREFIX = "/live"


@pytest.fixture(scope="package")
def live_base_url(tmp_path_factory):
    """The service's base URL (the app under ``PREFIX``)."""
    config = load_config()
    port = free_port()
    config["http_options"]["port"] = port
    key_file = tmp_path_factory.mktemp("secrets") / "api-key"
    key_file.write_text(API_KEY + "\n")
    app = variant(config["applications"][0], PREFIX.strip("/"), {"api_key_file": str(key_file), **LIVE_LIMITS},
                  {"Cartoonizer": {"user_config": LIVE_USER_CONFIG}})
    config["applications"] = [copy.deepcopy(app)]
    ray.init(
        num_cpus=RAY_CPUS,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    deploy_config(config)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, [PREFIX])
    yield url
    serve.shutdown()
    ray.shutdown()
