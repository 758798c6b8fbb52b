"""The video jobs' store named by a URI: files where the URI says, claims through the cluster."""

from pathlib import Path
from urllib.parse import urlsplit

from ray.experimental import internal_kv

from deployments.job_store import CLAIMS_NAMESPACE, JobStore
from tests.integration.test_http_api import assert_error
from tests.integration.test_video_jobs import clip_bytes, clip_path, wait_for  # noqa: F401 (fixtures)


def jobs_folder(config: dict, app_name: str) -> Path:
    (app,) = [app for app in config["applications"] if app["name"] == app_name]
    uri = app["args"]["jobs_dir"]
    assert uri.startswith("file:///"), uri
    return Path(urlsplit(uri).path)


def test_a_job_s_state_upload_and_result_live_where_its_uri_says(served, client, clip_bytes):
    folder = jobs_folder(served[1], "jobs")
    response = client.post("/jobs/v1/jobs", content=clip_bytes)
    assert response.status_code == 202, response.text
    job_id, location = response.json()["id"], response.headers["location"]
    assert (folder / job_id / "state.json").is_file(), "the job's state is not in the URI's folder"
    done, _ = wait_for(client, location, ("done", "failed", "lost"))
    assert done["state"] == "done", done
    # The upload goes once the job ends; the result stays, stored whole.
    kept = sorted(path.name for path in (folder / job_id).iterdir() if not path.name.startswith("attempt-"))
    assert kept == ["heartbeat", "output.mp4", "state.json"]
    result = client.get(f"{location}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    assert result.content == (folder / job_id / "output.mp4").read_bytes()
    assert int(result.headers["content-length"]) == len(result.content)
    assert client.delete(location).status_code == 200
    assert not (folder / job_id).exists()
    assert_error(client.get(location), 404, "job_not_found")


def test_a_store_with_no_exclusive_create_claims_each_attempt_once_in_the_cluster(base_url):
    # mock:// is Arrow's in-memory object store: no exclusive create, so claims go to
    # the GCS of the Ray this test runs in, as an s3:// store's do in the replicas.
    store = JobStore("mock:///bucket/jobs", lost_after_s=30)
    assert not store.local
    job_id = store.create({})
    assert [store.claim_attempt(job_id, 1) for _ in range(3)] == [True, False, False]
    assert store.claim_attempt(job_id.upper(), 2) and not store.claim_attempt(job_id, 2)
    assert internal_kv._internal_kv_list(f"bucket/jobs/{job_id}/", namespace=CLAIMS_NAMESPACE)
    store.delete(job_id)
    assert internal_kv._internal_kv_list(f"bucket/jobs/{job_id}/", namespace=CLAIMS_NAMESPACE) == []
