"""Video jobs on disk: what every replica reads, lost jobs, cancellation, retention."""

import json
import time
import uuid

from serve_app.job_store import JobStore


def test_a_job_is_read_back_as_written_and_unknown_ids_are_none(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    job_id = store.create({"format": "mp4"})
    assert store.read(job_id)["state"] == "queued" and store.read(job_id)["format"] == "mp4"
    store.update(job_id, state="running", progress={"frames_done": 3})
    assert store.read(job_id)["progress"] == {"frames_done": 3}
    for unknown in (str(uuid.uuid4()), "../etc", "not-a-uuid", ""):
        assert store.read(unknown) is None


def test_an_active_job_not_written_for_too_long_is_lost_and_a_finished_one_is_not(tmp_path):
    store = JobStore(tmp_path, lost_after_s=0.2)
    running, done = store.create({}), store.create({})
    store.update(running, state="running")
    store.update(done, state="done")
    time.sleep(0.3)
    assert store.read(running)["state"] == "lost" and store.read(running)["error"]["code"] == "job_lost"
    assert store.read(done)["state"] == "done"
    store.update(running, state="running")  # a heartbeat
    assert store.read(running)["state"] == "running"


def test_a_cancellation_wins_over_what_the_runner_writes_after_it(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    job_id = store.create({})
    store.cancel(job_id)
    store.update(job_id, state="running")
    assert store.read(job_id)["state"] == "cancelled"


def test_old_finished_jobs_are_purged_and_active_ones_kept(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    old, active = store.create({}), store.create({})
    store.update(old, state="done")
    state_file = tmp_path / old / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "updated_at": time.time() - 100}))
    assert store.purge(older_than_s=50) == 1
    assert store.read(old) is None and store.read(active)["state"] == "queued"
