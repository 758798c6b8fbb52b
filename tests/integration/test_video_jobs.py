"""Video jobs over real HTTP, through the served graph of serve_config.yaml."""

import time
import uuid

import av
import numpy as np
import pytest
import ray

from cartoon.video import media
from tests import clips, photos
from tests.integration.conftest import JOBS_LIMITS
from tests.integration.test_http_api import assert_error
from tests.integration.test_reliability import replica_actors

JOB_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return clips.portrait_clip(tmp_path_factory.mktemp("clips") / "hopper.mp4")


@pytest.fixture(scope="module")
def clip_bytes(clip_path):
    return clip_path.read_bytes()


def wait_for(client, location: str, states: tuple[str, ...], timeout_s: float = JOB_TIMEOUT_S) -> tuple[dict, list]:
    """Polls a job until its state is one of ``states``; returns it and every state seen."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(location)
        if response.status_code >= 500:  # the app's Ingress is being replaced
            time.sleep(0.5)
            continue
        assert response.status_code == 200, response.text
        seen.append(response.json())
        if seen[-1]["state"] in states:
            return seen[-1], seen
        time.sleep(0.5)
    raise AssertionError(f"the job is not {states} after {timeout_s} s: {seen[-1:]}")


def audio_packets(path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        return [(packet.pts, bytes(packet)) for packet in container.demux(container.streams.audio[0])
                if packet.dts is not None]


def test_a_clip_comes_back_cartoonized_with_its_frames_rate_duration_and_sound(client, clip_path, clip_bytes, tmp_path):
    response = client.post("/v1/jobs", content=clip_bytes, headers={"content-type": "video/mp4"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] == "queued" and job["error"] is None
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    done, seen = wait_for(client, response.headers["location"], ("done", "failed"))
    assert done["state"] == "done", done
    running = [state["progress"] for state in seen if state["state"] == "running"]
    assert running and all(p["frames_total"] == 24 for p in running)
    assert [p["frames_done"] for p in running] == sorted(p["frames_done"] for p in running)
    assert done["progress"]["frames_done"] == 24

    result = client.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    output = tmp_path / "out.mp4"
    output.write_bytes(result.content)
    source, made = media.probe(clip_path), media.probe(output)
    assert (made.width, made.height, made.fps, made.rotation) == (source.width, source.height, source.fps, 0)
    assert abs(made.duration_s - source.duration_s) < 1e-3
    inputs = [frame for frame in media.frames(clip_path, 0)]
    outputs = [frame for frame in media.frames(output, 0)]
    assert [f.pts for f in outputs] == [f.pts for f in inputs] and len(outputs) == 24
    # Every frame cartoonized: far from its input (a frame passed through is ~1 away).
    assert min(np.abs(o.rgb.astype(int) - i.rgb).mean() for o, i in zip(outputs, inputs)) > 8
    assert made.audio_codec == "aac" and audio_packets(output) == audio_packets(clip_path)


def test_a_multipart_upload_into_matroska(client, clip_bytes, tmp_path):
    response = client.post("/v1/jobs", params={"format": "mkv", "max_side": 176},
                           files={"video": ("hopper.mp4", clip_bytes, "video/mp4")})
    assert response.status_code == 202, response.text
    done, _ = wait_for(client, response.headers["location"], ("done", "failed"))
    assert done["state"] == "done", done
    result = client.get(f"{response.headers['location']}/result")
    assert result.headers["content-type"] == "video/x-matroska"
    output = tmp_path / "out.mkv"
    output.write_bytes(result.content)
    assert (media.probe(output).width, media.probe(output).height) == (144, 176)
    assert len(list(media.frames(output, 0))) == 24


def test_a_queued_or_running_job_can_be_cancelled_and_has_no_result(client, clip_bytes):
    response = client.post("/v1/jobs", content=clip_bytes)
    location = response.headers["location"]
    assert_error(client.get(f"{location}/result"), 409, "job_not_done")
    cancelled = client.delete(location)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    time.sleep(2.0)  # the runner sees the cancellation at its next frame
    assert client.get(location).json()["state"] == "cancelled"
    assert_error(client.get(f"{location}/result"), 409, "job_not_done")


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("GET", "/result"), ("DELETE", "")])
@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-job"])
def test_an_unknown_job_is_404(client, method, suffix, job_id):
    assert_error(client.request(method, f"/v1/jobs/{job_id}{suffix}"), 404, "job_not_found")


def test_bad_input_gets_a_clear_4xx_and_the_service_keeps_serving(client, clip_path, clip_bytes, tmp_path):
    png = photos.encode(photos.grace_hopper()[:64, :64])
    assert_error(client.post("/v1/jobs", content=png), 400, "not_a_video")
    assert_error(client.post("/v1/jobs", content=clip_bytes[: len(clip_bytes) // 3]), 400, "corrupt_video")
    assert_error(client.post("/v1/jobs", params={"style": "nope"}, content=clip_bytes), 422, "unknown_style")
    assert_error(client.post("/v1/jobs", params={"format": "avi"}, content=clip_bytes), 422, "invalid_parameter")
    assert_error(client.post("/v1/jobs", params={"format": "webm"}, content=clip_bytes), 422, "audio_not_muxable")
    assert_error(client.post("/v1/jobs", files={"image": ("a.mp4", clip_bytes, "video/mp4")}), 422,
                 "invalid_parameter")
    long_clip = clips.portrait_clip(tmp_path / "long.mp4", frames=48, audio=False).read_bytes()
    assert len(long_clip) < JOBS_LIMITS["max_video_bytes"]
    assert_error(client.post("/jobs/v1/jobs", content=long_clip), 413, "video_too_long")
    wide = clips.write_clip(tmp_path / "wide.mp4", clips.camera_move(photos.astronaut(), 6, 400, 320))
    assert 400 * 320 > JOBS_LIMITS["max_video_pixels"]
    assert_error(client.post("/jobs/v1/jobs", content=wide.read_bytes()), 413, "too_many_pixels")
    assert_error(client.post("/jobs/v1/jobs", content=bytes(JOBS_LIMITS["max_video_bytes"] + 1)), 413, "body_too_large")
    assert client.post("/jobs/v1/jobs", content=clips.portrait_clip(tmp_path / "ok.mp4", frames=6).read_bytes()
                       ).status_code == 202


def kill_replica(app: str, deployment: str) -> None:
    (victim,) = replica_actors(app, deployment)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)


def kill_runners(app: str) -> None:
    """Kills every VideoJobRunner replica of the app: the one running the job among them
    (the runners autoscale, so earlier tests' jobs may have left two up)."""
    victims = replica_actors(app, "VideoJobRunner")
    assert victims
    for victim in victims:
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)


def test_a_job_whose_runner_died_is_taken_up_again_and_finishes(client, clip_bytes):
    response = client.post("/v1/jobs", content=clip_bytes)
    location = response.headers["location"]
    wait_for(client, location, ("running",))
    kill_runners("cartoon")
    done, seen = wait_for(client, location, ("done", "failed", "lost"))
    assert done["state"] == "done", done
    assert "lost" not in {state["state"] for state in seen}
    assert client.get(f"{location}/result").status_code == 200


def test_a_job_whose_last_attempt_died_is_lost_with_a_reason(client, clip_bytes):
    response = client.post("/jobs/v1/jobs", content=clip_bytes)
    location = response.headers["location"]
    wait_for(client, location, ("running",))
    kill_runners("jobs")
    lost, _ = wait_for(client, location, ("lost", "done"), timeout_s=120)
    assert lost["state"] == "lost" and lost["error"]["code"] == "job_lost", lost
    assert "runner stopped" in lost["error"]["message"]
    assert_error(client.get(f"{location}/result"), 409, "job_not_done")


def test_a_job_outlives_the_ingress_that_took_it(client, clip_bytes):
    response = client.post("/jobs/v1/jobs", content=clip_bytes)
    location = response.headers["location"]
    wait_for(client, location, ("running",))
    kill_replica("jobs", "Ingress")
    done, _ = wait_for(client, location, ("done", "failed", "lost"))
    assert done["state"] == "done", done


def test_any_spelling_of_a_job_id_is_the_same_job(client, clip_bytes):
    job_id = client.post("/v1/jobs", content=clip_bytes).json()["id"]
    for spelling in (job_id.upper(), job_id.replace("-", ""), "{" + job_id.upper() + "}"):
        assert client.get(f"/v1/jobs/{spelling}").json()["id"] == job_id
        assert client.get(f"/v1/jobs/{spelling}/result").status_code in (200, 409)
    cancelled = client.delete(f"/v1/jobs/{job_id.upper()}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"


def test_deleting_a_finished_job_deletes_it(client, clip_bytes):
    location = client.post("/v1/jobs", content=clip_bytes, params={"max_side": 96}).headers["location"]
    done, _ = wait_for(client, location, ("done", "failed"))
    assert done["state"] == "done", done
    deleted = client.delete(location)
    assert deleted.status_code == 200 and deleted.json()["state"] == "done"
    for path in (location, f"{location}/result"):
        assert_error(client.get(path), 404, "job_not_found")
    assert_error(client.delete(location), 404, "job_not_found")


def test_one_client_cannot_hold_more_than_its_cap_of_jobs(client, clip_bytes):
    locations = [client.post("/v1/jobs", content=clip_bytes).headers["location"] for _ in range(2)]
    refused = client.post("/v1/jobs", content=clip_bytes)
    assert_error(refused, 429, "too_many_jobs")
    assert int(refused.headers["retry-after"]) > 0
    for location in locations:
        assert client.delete(location).json()["state"] == "cancelled"
