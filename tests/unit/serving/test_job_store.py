"""Video jobs in the shared folder: ids, heartbeats, stale jobs, cancellation, retention, disk use."""

import asyncio
import shutil
import time
import uuid

import pytest

from deployments.job_store import Heartbeats, JobGone, JobStore, canonical_id


def test_a_job_is_read_back_as_written_and_unknown_ids_are_none(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    job_id = store.create({"format": "mp4"})
    assert store.read(job_id)["state"] == "queued" and store.read(job_id)["format"] == "mp4"
    store.update(job_id, state="running", progress={"frames_done": 3})
    assert store.read(job_id)["progress"] == {"frames_done": 3}
    for unknown in (str(uuid.uuid4()), "../etc", "not-a-uuid", ""):
        assert store.read(unknown) is None


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


def test_an_active_job_whose_holder_went_silent_is_stale_and_a_finished_one_is_not(tmp_path):
    store = JobStore(tmp_path, lost_after_s=0.2)
    running, done = store.create({}), store.create({})
    store.update(running, state="running")
    store.update(done, state="done")
    time.sleep(0.3)
    assert [state["id"] for state in store.stale()] == [running]
    assert store.read(running)["state"] == "running"  # taken up again, not reported lost
    store.beat(running)
    assert store.stale() == []


def test_a_cancellation_wins_over_what_the_runner_writes_after_it(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    job_id = store.create({})
    store.cancel(job_id)
    store.update(job_id, state="running")
    assert store.read(job_id)["state"] == "cancelled" and not store.ended(job_id)


def test_an_attempt_is_claimed_once(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    job_id = store.create({})
    assert store.claim_attempt(job_id, 1) and not store.claim_attempt(job_id.upper(), 1)
    assert store.claim_attempt(job_id, 2)
    store.delete(job_id)
    with pytest.raises(JobGone):
        store.claim_attempt(job_id, 3)


def test_a_job_whose_folder_is_gone_stops_only_its_own_heartbeat(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    kept, deleted = store.create({}), store.create({})

    async def beats_after_the_removal() -> bool:
        heartbeats = Heartbeats(store, period_s=0.02)
        heartbeats.start(deleted)
        heartbeats.start(kept)
        await asyncio.sleep(0.1)
        shutil.rmtree(tmp_path / deleted)
        removed_at = time.time()
        try:
            for _ in range(250):  # up to 5 s on a loaded machine; a beat comes every 0.02 s
                await asyncio.sleep(0.02)
                if store.last_beat(kept) > removed_at:
                    return True
            return False
        finally:
            heartbeats.stop(kept)

    assert asyncio.run(beats_after_the_removal())
    assert store.read(deleted) is None
    with pytest.raises(JobGone):
        store.update(deleted, state="running")


def finished(store: JobStore, state: str, seconds_ago: float) -> str:
    job_id = store.create({})
    store.input_path(job_id).write_bytes(b"upload")
    store.update(job_id, state=state, finished_at=time.time() - seconds_ago)
    return job_id


def test_retention_deletes_jobs_finished_long_enough_ago_and_every_ended_jobs_upload(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    old = [finished(store, state, 100) for state in ("done", "failed", "cancelled", "lost")]
    recent = [finished(store, state, 10) for state in ("done", "failed", "cancelled", "lost")]
    active = store.create({})
    store.input_path(active).write_bytes(b"upload")
    cancelled_while_queued = store.create({})
    store.input_path(cancelled_while_queued).write_bytes(b"upload")
    store.cancel(cancelled_while_queued)

    assert store.purge(retention_s=50) == len(old)
    assert [store.read(job_id) for job_id in old] == [None] * len(old)
    assert all(store.read(job_id) is not None and not store.input_path(job_id).exists() for job_id in recent)
    assert not store.input_path(cancelled_while_queued).exists()
    assert store.read(active)["state"] == "queued" and store.input_path(active).exists()


def test_disk_use_counts_every_file_of_every_job(tmp_path):
    store = JobStore(tmp_path, lost_after_s=30)
    before = store.usage_bytes()
    first, second = store.create({}), store.create({})
    store.input_path(first).write_bytes(bytes(1000))
    store.output_path(second, "mp4").write_bytes(bytes(3000))
    assert store.usage_bytes() - before >= 4000
    store.delete(second)
    assert 1000 <= store.usage_bytes() - before < 3000
