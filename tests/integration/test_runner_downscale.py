"""A VideoJobRunner taken away mid-job (a downscale) hands its job back; no job is lost.

The "scaling" app (tests/integration/conftest.py) runs two runners that finish a job
within SCALING_SHUTDOWN_S of being told to stop, shorter than the test clip's job: its
config is deployed again with one runner, Serve stops one of the two busy runners, and
its job must be taken up again by the other and finish.
"""

import copy
import json
import time
from pathlib import Path

from ray import serve

from serve_app.local import deploy_config
from tests.integration.test_video_jobs import clip_bytes, clip_path, wait_for  # noqa: F401 (fixtures)


def runners(config: dict, count: int) -> dict:
    """``config`` with the "scaling" app's VideoJobRunner at ``count`` replicas."""
    changed = copy.deepcopy(config)
    (app,) = [app for app in changed["applications"] if app["name"] == "scaling"]
    (runner,) = [deployment for deployment in app["deployments"] if deployment["name"] == "VideoJobRunner"]
    runner["autoscaling_config"] = {"min_replicas": count, "max_replicas": count}
    return changed


def running_runners() -> int:
    status = serve.status().applications["scaling"].deployments["VideoJobRunner"]
    return status.replica_states.get("RUNNING", 0)


def test_a_runner_taken_away_mid_job_hands_its_job_back_and_the_other_runner_finishes_it(served, client,
                                                                                         clip_bytes):
    _, config = served
    (app,) = [app for app in config["applications"] if app["name"] == "scaling"]
    jobs_dir = app["args"]["jobs_dir"]
    locations = []
    for _ in range(2):
        response = client.post("/scaling/v1/jobs", content=clip_bytes)
        assert response.status_code == 202, response.text
        locations.append(response.headers["location"])
    for location in locations:  # one job on each runner (each runs one at a time)
        wait_for(client, location, ("running",))
    deploy_config(runners(config, 1))
    try:
        deadline = time.monotonic() + 120
        while running_runners() != 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert running_runners() == 1, "the downscale did not happen"
        ended = [wait_for(client, location, ("done", "failed", "lost"))[0] for location in locations]
        assert [job["state"] for job in ended] == ["done", "done"], ended
        attempts = sorted(json.loads((Path(jobs_dir) / job["id"] / "state.json").read_text())["attempt"]
                          for job in ended)
        assert attempts == [0, 1], "the stopped runner's job was not handed back and taken up again"
        for location in locations:
            assert client.get(f"{location}/result").status_code == 200
    finally:
        deploy_config(config)
