"""Hostile clips and replica crashes under video jobs, over real HTTP (the /jobs app's small limits)."""

import os
import signal
import time

import numpy as np

from tests import clips, photos
from tests.integration.conftest import JOBS_LIMITS
from tests.integration.test_http_api import assert_error
from tests.integration.test_reliability import own_processes, replica_actors, replica_pids
from tests.integration.test_video_jobs import wait_for

import ray


def test_a_webm_without_a_declared_duration_is_measured_and_refused_413(client, tmp_path):
    """MediaRecorder's WebM declares no duration: 4 s of it against the 3 s limit."""
    recorded = clips.write_clip(tmp_path / "recorded.webm", clips.camera_move(photos.grace_hopper(), 48, 64, 48),
                                container="webm", codec="libvpx-vp9", audio=False, options={"live": "1"})
    assert JOBS_LIMITS["max_video_seconds"] < 4.0
    body = assert_error(client.post("/jobs/v1/jobs", content=recorded.read_bytes()), 413, "video_too_long")
    assert "4.0 s" in body["error"]["message"]


def test_a_frame_larger_than_its_header_fails_the_job_with_the_uploads_413_code(client, tmp_path):
    grows = clips.mjpeg_clip(tmp_path / "grows.mkv", [np.full((48, 64, 3), 120, np.uint8)] * 2
                             + [np.full((3000, 4000, 3), 120, np.uint8)])
    assert 4000 * 3000 > JOBS_LIMITS["max_video_pixels"] > 64 * 48
    response = client.post("/jobs/v1/jobs", content=grows.read_bytes())
    assert response.status_code == 202, response.text  # the header and the first frame say 64x48
    failed, _ = wait_for(client, response.headers["location"], ("failed", "done"), timeout_s=300)
    assert failed["state"] == "failed" and failed["error"]["code"] == "too_many_pixels", failed
    assert "4000x3000" in failed["error"]["message"] and "/" not in failed["error"]["message"]


def test_repeated_timestamps_are_repaired_and_the_job_is_done(client, tmp_path):
    frames = clips.camera_move(photos.grace_hopper(), 8, 144, 176)
    repeats = clips.mjpeg_clip(tmp_path / "repeats.mkv", frames, stamps=[0, 1, 1, 2, 3, 3, 4, 5])
    response = client.post("/jobs/v1/jobs", content=repeats.read_bytes())
    assert response.status_code == 202, response.text
    done, _ = wait_for(client, response.headers["location"], ("failed", "done"), timeout_s=300)
    assert done["state"] == "done" and done["progress"]["frames_done"] == 8, done


def test_a_broken_video_is_400_without_the_servers_path(client, tmp_path):
    clip = clips.portrait_clip(tmp_path / "hopper.mp4", frames=6).read_bytes()
    body = assert_error(client.post("/jobs/v1/jobs", content=clip[:4000]), 400, "corrupt_video")
    assert "/" not in body["error"]["message"], body


def crash_jobs_stage_when_busy(deployment: str) -> None:
    """SIGKILLs the /jobs app's only replica of ``deployment`` once it works on a frame."""
    while len(pids := replica_pids("jobs", deployment)) != 1 or len(actors := replica_actors("jobs", deployment)) != 1:
        time.sleep(0.5)
    actor = ray.get_actor(actors[0], namespace="serve")
    while not ray.get(actor.get_num_ongoing_requests.remote()):
        time.sleep(0.01)
    os.kill(pids[0], signal.SIGKILL)


def test_a_replica_crash_under_a_job_costs_no_frame(client, tmp_path):
    """The frames in flight on the crashed FaceAligner are tried alone, pass, and the job goes on."""
    clip = clips.portrait_clip(tmp_path / "hopper.mp4", frames=24, audio=False)
    response = client.post("/jobs/v1/jobs", content=clip.read_bytes())
    location = response.headers["location"]
    wait_for(client, location, ("running",))
    crash_jobs_stage_when_busy("FaceAligner")
    done, _ = wait_for(client, location, ("failed", "done", "lost"))
    assert done["state"] == "done" and done["progress"]["frames_done"] == 24, done


def test_a_frame_that_kills_a_replica_and_its_trial_fails_the_job_with_poison_frame(client, tmp_path):
    clip = clips.portrait_clip(tmp_path / "hopper.mp4", frames=30, audio=False)
    response = client.post("/jobs/v1/jobs", content=clip.read_bytes())
    location = response.headers["location"]
    wait_for(client, location, ("running",))
    for _ in range(3):  # a kill may find only a request that was done meanwhile: kill again
        crash_jobs_stage_when_busy("FaceAligner")
        deadline = time.monotonic() + 60
        while not (trials := own_processes("ray::stylize_frame_alone")) and time.monotonic() < deadline:
            time.sleep(0.05)
        if trials:
            os.kill(trials[0], signal.SIGKILL)  # as the frame would
            break
    assert trials, "no frame was tried alone"
    failed, _ = wait_for(client, location, ("failed", "done", "lost"))
    assert failed["state"] == "failed" and failed["error"]["code"] == "poison_frame", failed
