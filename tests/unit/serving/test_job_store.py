"""Video jobs on disk: what every replica reads, lost jobs, cancellation, retention."""

import asyncio
import json
import shutil
import time
import uuid

import pytest

from serve_app.job_store import Heartbeats, JobGone, JobStore, canonical_id


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


def test_every_spelling_of_a_job_id_names_the_same_job(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    job_id = store.create({})
    spellings = [job_id.upper(), "{" + job_id + "}", f"urn:uuid:{job_id}", job_id.replace("-", "")]
    assert [canonical_id(spelling) for spelling in spellings] == [job_id] * len(spellings)
    assert [store.read(spelling)["id"] for spelling in spellings] == [job_id] * len(spellings)
    store.cancel(job_id.upper())
    assert store.read(job_id)["state"] == "cancelled"
    assert store.input_path(job_id.upper()) == store.input_path(job_id)
    assert [canonical_id(other) for other in ("not-a-uuid", "", "../" + job_id)] == [None, None, None]


def test_a_job_whose_folder_is_gone_stops_only_its_own_heartbeat(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    kept, deleted = store.create({}), store.create({})

    async def beat_both() -> float:
        heartbeats = Heartbeats(store, period_s=0.02)
        heartbeats.start(deleted)
        heartbeats.start(kept)
        shutil.rmtree(tmp_path / deleted)
        removed_at = time.time()
        await asyncio.sleep(0.2)
        heartbeats.stop(kept)
        return removed_at

    removed_at = asyncio.run(beat_both())
    assert store.read(kept)["updated_at"] > removed_at + 0.1
    assert store.read(deleted) is None
    with pytest.raises(JobGone):
        store.update(deleted, state="running")
