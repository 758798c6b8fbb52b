"""The config is checked across fields when the app is built, the way `serve run` builds it."""

import pydantic
import pytest
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

from deployments.settings import AppArgs
from serve_app.app import build_app


@pytest.mark.parametrize("args, named", [
    ({"tile": 100}, "tile (100)"),
    ({"tile": 128, "halo": 64}, "tile (128)"),
    ({"halo": 30}, "halo (30)"),
    ({"process_side": 2000, "background_pixels": 1_000_000}, "background_pixels"),
    ({"min_in_flight": 10, "max_in_flight": 5}, "max_in_flight"),
    ({"styles_dir": "/nonexistent"}, "styles_dir"),
    ({"api_key_file": "/nonexistent/key"}, "api_key_file"),
    ({"cors_origins": ["example.com"]}, "cors_origins"),
    ({"background_scale": 0.0}, "background_scale (0.0)"),
    ({"background_scale": 1.5}, "background_scale (1.5)"),
    ({"background_scale": 0.5, "tile": 384, "halo": 64}, "background_scale (0.5) below 1 needs whole backgrounds"),
])
def test_a_bad_config_fails_the_build_naming_the_field(args, named):
    with pytest.raises(pydantic.ValidationError, match=named.replace("(", r"\(").replace(")", r"\)")):
        call_user_app_builder_with_args_if_necessary(build_app, args)


@pytest.mark.parametrize("args", [
    {},
    {"tile": 384, "halo": 64},
    {"tile": 384, "halo": 64, "background_scale": "auto"},
    {"background_scale": 0.75},
    {"cors_origins": ["https://app.example.com", "http://localhost:5173"]},
])
def test_good_configs_build(args):
    call_user_app_builder_with_args_if_necessary(build_app, args)


def test_an_empty_key_file_is_refused(tmp_path):
    (tmp_path / "key").write_text("\n")
    with pytest.raises(pydantic.ValidationError, match="api_key_file"):
        AppArgs(api_key_file=str(tmp_path / "key"))


def _deployments(app) -> dict:
    """Every bound deployment of an application, by name."""
    found = {}
    pending = [app._bound_deployment]
    while pending:
        deployment = pending.pop()
        found[deployment.name] = deployment
        pending += [arg._bound_deployment for arg in deployment.init_args if hasattr(arg, "_bound_deployment")]
    return found


def test_every_replica_waits_out_the_request_timeout_when_stopped():
    deployments = _deployments(call_user_app_builder_with_args_if_necessary(build_app, {"request_timeout_s": 90}))
    assert set(deployments) == {"Ingress", "FaceAligner", "Cartoonizer", "Postprocessor", "VideoJobRunner"}
    for deployment in deployments.values():
        assert deployment._deployment_config.graceful_shutdown_timeout_s >= 90, deployment.name


def test_a_video_job_runner_waits_out_its_jobs_when_stopped_and_runs_as_many_as_configured():
    deployments = _deployments(call_user_app_builder_with_args_if_necessary(
        build_app, {"job_shutdown_s": 900, "video_jobs_per_replica": 3}))
    config = deployments["VideoJobRunner"]._deployment_config
    assert (config.graceful_shutdown_timeout_s, config.max_ongoing_requests) == (900, 3)


def test_the_registry_is_read_once_and_handed_to_every_replica():
    deployments = _deployments(call_user_app_builder_with_args_if_necessary(build_app, {}))
    registries = [arg for deployment in deployments.values() for arg in deployment.init_args
                  if type(arg).__name__ == "StyleRegistry"]
    assert len(registries) == 4 and all(registry is registries[0] for registry in registries)
