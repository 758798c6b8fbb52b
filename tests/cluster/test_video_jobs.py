"""Video jobs on two nodes: any Ingress answers for any job, and losing a node loses no job.

The head and a worker node each hold an Ingress and a VideoJobRunner; the image stages
stay on the head. Both nodes see one jobs folder, as the pods of a cluster see one
shared volume. Jobs are posted through the head's proxy (which spreads them over both
Ingresses); then the worker node goes, with its Ingress and its runner in the middle of
a job, and every job is read back, done, through the Ingress left.
"""

import json

import httpx
import pytest

from cartoon.video import media
from serve_app.local import deploy_config, free_port
from tests import clips
from tests.cluster.conftest import gpu_node_config, running, serve_cluster, wait_for, wait_until_serving

CLIP_FRAMES = 12
MIN_JOBS, MAX_JOBS = 4, 10
JOB_TIMEOUT_S = 900.0
# Simulated nodes share 127.0.0.1, so only the head runs a proxy, and a proxy sends
# every request to an Ingress on its own node when it has one. On a real cluster a load
# balancer spreads clients over every node's proxy; here the head's proxy spreads them.
SPREAD = {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    ray_dir = tmp_path_factory.mktemp("ray")
    jobs_dir = tmp_path_factory.mktemp("jobs")
    with serve_cluster(ray_dir, head_cpus=3, head_resources={"head": 10}, serve_env=SPREAD) as cluster:
        worker = cluster.add_node(num_cpus=2)
        port = free_port()
        on_head = {"num_cpus": 0.5, "resources": {"head": 1}}
        config = gpu_node_config(port, {
            "Ingress": {"num_replicas": 2, "max_replicas_per_node": 1, "ray_actor_options": {"num_cpus": 0.25}},
            "VideoJobRunner": {"num_replicas": 2, "max_replicas_per_node": 1, "ray_actor_options": {"num_cpus": 0.5}},
            "FaceAligner": {"num_replicas": 1, "ray_actor_options": on_head},
            "Postprocessor": {"num_replicas": 1, "ray_actor_options": on_head},
            "Cartoonizer": {"num_replicas": 1, "ray_actor_options": {**on_head, "num_gpus": 0}},
        })
        config["applications"][0]["args"].update(
            jobs_dir=str(jobs_dir), job_lost_after_s=4.0, job_max_attempts=3, max_jobs_per_client=MAX_JOBS,
            video_jobs_per_replica=1, video_frames_in_flight=4,
        )
        deploy_config(config)
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url)
        wait_for(lambda: running("Ingress") == 2 and running("VideoJobRunner") == 2,
                 "an Ingress and a VideoJobRunner on each node")
        yield cluster, worker, url, jobs_dir


def stored(jobs_dir, job_id: str) -> dict:
    """The job's state as the store holds it, with the nodes that took and ran it."""
    return json.loads((jobs_dir / job_id / "state.json").read_text())


def test_jobs_taken_by_one_ingress_are_read_back_through_another_when_a_runners_node_is_lost(two_nodes, tmp_path):
    cluster, worker, url, jobs_dir = two_nodes
    clip = clips.portrait_clip(tmp_path / "clip.mp4", frames=CLIP_FRAMES).read_bytes()
    with httpx.Client(base_url=url, timeout=60) as client:
        ids: list[str] = []
        # The proxy picks an Ingress for each POST: post until both have taken jobs.
        while len(ids) < MIN_JOBS or len({stored(jobs_dir, job_id)["taken_on"] for job_id in ids}) < 2:
            assert len(ids) < MAX_JOBS, "every job went to the same Ingress"
            response = client.post("/v1/jobs", content=clip, params={"max_side": 128})
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        taken_by_worker = [job_id for job_id in ids if stored(jobs_dir, job_id)["taken_on"] == worker.node_id]

        def worker_runs_a_job() -> bool:
            states = [stored(jobs_dir, job_id) for job_id in ids]
            return any(state["state"] == "running" and state.get("run_on") == worker.node_id for state in states)

        wait_for(worker_runs_a_job, "the worker's runner in the middle of a job", timeout_s=JOB_TIMEOUT_S)
        cluster.remove_node(worker)

        def all_ended() -> bool:
            return all(client.get(f"/v1/jobs/{job_id}").json()["state"] not in ("queued", "running")
                       for job_id in ids)

        wait_for(all_ended, "every job ended", timeout_s=JOB_TIMEOUT_S, period_s=2.0)
        states = {job_id: client.get(f"/v1/jobs/{job_id}").json() for job_id in ids}
        assert {state["state"] for state in states.values()} == {"done"}, states
        assert max(stored(jobs_dir, job_id)["attempt"] for job_id in ids) >= 1, "no job was taken up again"
        for job_id in taken_by_worker:
            result = client.get(f"/v1/jobs/{job_id}/result")
            assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
            output = tmp_path / f"{job_id}.mp4"
            output.write_bytes(result.content)
            assert len(list(media.frames(output, 0))) == CLIP_FRAMES
