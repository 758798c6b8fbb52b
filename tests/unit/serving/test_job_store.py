"""Video jobs in the shared store: ids, heartbeats, stale jobs, cancellation, retention, disk use.

Every test runs on four of pyarrow's filesystems: a plain path, a ``file://`` URI, a
``SubTreeFileSystem`` over a local folder, and the ``mock://`` in-memory object store
(written in place, no folders), so the store's code is the same on each and object
stores are not left to luck.
"""

import asyncio
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from deployments.job_store import Heartbeats, JobGone, JobStore, canonical_id, open_root, redacted

FILESYSTEMS = ["path", "file-uri", "subtree", "mock"]
# Claims need an exclusive create: local files here; elsewhere Ray's GCS
# (tests/integration/test_job_store_uri.py).
LOCAL = ["path", "file-uri"]


def make_store(kind: str, tmp_path: Path, lost_after_s: float) -> JobStore:
    # The store's root is a folder of its own: the tests stage files beside it.
    if kind == "path":
        return JobStore(tmp_path / "jobs", lost_after_s)
    if kind == "file-uri":
        return JobStore((tmp_path / "jobs").as_uri(), lost_after_s)
    if kind == "subtree":
        return JobStore("jobs", lost_after_s, filesystem=pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()))
    # Each mock:// URI is a filesystem of its own, empty.
    return JobStore("mock:///bucket/jobs", lost_after_s)


@pytest.fixture(params=FILESYSTEMS)
def kind(request) -> str:
    return request.param


def uploaded(store: JobStore, job_id: str, tmp_path: Path, data: bytes = b"upload") -> None:
    staged = tmp_path / f"staged-{uuid.uuid4().hex}"
    staged.write_bytes(data)
    store.put_input(job_id, staged)


def test_a_job_is_read_back_as_written_and_unknown_ids_are_none(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=30)
    job_id = store.create({"format": "mp4"})
    assert store.read(job_id)["state"] == "queued" and store.read(job_id)["format"] == "mp4"
    store.update(job_id, state="running", progress={"frames_done": 3})
    assert store.read(job_id)["progress"] == {"frames_done": 3}
    for unknown in (str(uuid.uuid4()), "../etc", "not-a-uuid", ""):
        assert store.read(unknown) is None


def test_every_spelling_of_a_job_id_names_the_same_job(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=30)
    job_id = store.create({})
    spellings = [job_id.upper(), "{" + job_id + "}", f"urn:uuid:{job_id}", job_id.replace("-", "")]
    assert [canonical_id(spelling) for spelling in spellings] == [job_id] * len(spellings)
    assert [store.read(spelling)["id"] for spelling in spellings] == [job_id] * len(spellings)
    store.cancel(job_id.upper())
    assert store.read(job_id)["state"] == "cancelled"
    uploaded(store, job_id.upper(), tmp_path)
    assert store.has_input(job_id) and store.has_input("{" + job_id.upper() + "}")
    assert [canonical_id(other) for other in ("not-a-uuid", "", "../" + job_id)] == [None, None, None]


def test_an_active_job_whose_holder_went_silent_is_stale_and_a_finished_one_is_not(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=0.2)
    running, done = store.create({}), store.create({})
    store.update(running, state="running")
    store.update(done, state="done")
    time.sleep(0.3)
    assert [state["id"] for state in store.stale()] == [running]
    assert store.read(running)["state"] == "running"  # taken up again, not reported lost
    store.beat(running)
    assert store.stale() == []


def test_a_cancellation_wins_over_what_the_runner_writes_after_it(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=30)
    job_id = store.create({})
    store.cancel(job_id)
    store.update(job_id, state="running")
    assert store.read(job_id)["state"] == "cancelled" and not store.ended(job_id)


@pytest.mark.parametrize("kind", LOCAL)
def test_an_attempt_is_claimed_once(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=30)
    job_id = store.create({})
    assert store.claim_attempt(job_id, 1) and not store.claim_attempt(job_id.upper(), 1)
    assert store.claim_attempt(job_id, 2)
    store.delete(job_id)
    with pytest.raises(JobGone):
        store.claim_attempt(job_id, 3)


def test_a_job_whose_folder_is_gone_stops_only_its_own_heartbeat(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=30)
    kept, deleted = store.create({}), store.create({})

    async def beats_after_the_removal() -> bool:
        heartbeats = Heartbeats(store, period_s=0.02)
        heartbeats.start(deleted)
        heartbeats.start(kept)
        await asyncio.sleep(0.1)
        store.delete(deleted)
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


def finished(store: JobStore, tmp_path: Path, state: str, seconds_ago: float) -> str:
    job_id = store.create({})
    uploaded(store, job_id, tmp_path)
    store.update(job_id, state=state, finished_at=time.time() - seconds_ago)
    return job_id


def test_retention_deletes_jobs_finished_long_enough_ago_and_every_ended_jobs_upload(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=30)
    old = [finished(store, tmp_path, state, 100) for state in ("done", "failed", "cancelled", "lost")]
    recent = [finished(store, tmp_path, state, 10) for state in ("done", "failed", "cancelled", "lost")]
    active = store.create({})
    uploaded(store, active, tmp_path)
    cancelled_while_queued = store.create({})
    uploaded(store, cancelled_while_queued, tmp_path)
    store.cancel(cancelled_while_queued)

    assert store.purge(retention_s=50) == len(old)
    assert [store.read(job_id) for job_id in old] == [None] * len(old)
    assert all(store.read(job_id) is not None and not store.has_input(job_id) for job_id in recent)
    assert not store.has_input(cancelled_while_queued)
    assert store.read(active)["state"] == "queued" and store.has_input(active)


def test_disk_use_counts_every_file_of_every_job(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=30)
    before = store.usage_bytes()
    first, second = store.create({}), store.create({})
    uploaded(store, first, tmp_path, bytes(1000))
    result = tmp_path / "result.mp4"
    result.write_bytes(bytes(3000))
    store.put_output(second, "mp4", result)
    assert store.usage_bytes() - before >= 4000
    store.delete(second)
    assert 1000 <= store.usage_bytes() - before < 3000


def test_an_upload_and_a_result_go_through_the_store_whole(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=30)
    job_id = store.create({})
    upload = bytes(range(256)) * 9000  # over two of the store's chunks
    uploaded(store, job_id, tmp_path, upload)
    fetched = tmp_path / "fetched"
    store.fetch_input(job_id.upper(), fetched)
    assert fetched.read_bytes() == upload
    assert store.output_size(job_id, "mp4") is None
    result = tmp_path / "made.mp4"
    result.write_bytes(upload[::-1])
    store.put_output(job_id, "mp4", result)
    assert store.output_size(job_id, "mp4") == len(upload)
    assert b"".join(store.read_output(job_id, "mp4")) == upload[::-1]
    store.delete(job_id)
    assert store.output_size(job_id, "mp4") is None
    with pytest.raises(JobGone):
        list(store.read_output(job_id, "mp4"))
    with pytest.raises(JobGone):
        store.fetch_input(job_id, fetched)


def test_nothing_written_after_a_deletion_brings_the_job_back(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=30)
    job_id = store.create({})
    store.delete(job_id)
    result = tmp_path / "made.mp4"
    result.write_bytes(b"result")
    for write in (lambda: store.beat(job_id), lambda: store.cancel(job_id),
                  lambda: store.put_output(job_id, "mp4", result), lambda: uploaded(store, job_id, tmp_path)):
        with pytest.raises(JobGone):
            write()
    assert store.usage_bytes() == 0 and list(store.jobs()) == []


def test_a_folder_left_with_no_state_is_swept_once_its_files_are_old(kind, tmp_path):
    store = make_store(kind, tmp_path, lost_after_s=0.2)
    kept = store.create({})
    orphan = str(uuid.uuid4())
    # What a heartbeat racing its job's deletion leaves on an object store.
    store.filesystem.create_dir(f"{store.root}/{orphan}")
    with store.filesystem.open_output_stream(f"{store.root}/{orphan}/heartbeat") as stream:
        stream.write(b"1.0")

    def orphans() -> list[str]:
        return [info.path for info in store._files() if orphan in info.path]

    store.purge(retention_s=3600)
    assert orphans(), "a folder too young to be an orphan was swept"
    time.sleep(0.3)
    store.beat(kept)
    store.purge(retention_s=3600)
    assert orphans() == []
    assert store.read(kept)["state"] == "queued"


def test_a_uri_s_secrets_never_reach_an_error():
    uri = "zz://AKIAEXAMPLE:hunter2-secret@bucket/jobs?session_token=tok-secret&region=eu-west-1"
    with pytest.raises(ValueError) as raised:
        open_root(uri)
    message = str(raised.value)
    assert "zz://bucket/jobs" in message
    assert not any(secret in message for secret in ("AKIAEXAMPLE", "hunter2-secret", "tok-secret"))
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert redacted("s3://key:secret@bucket/jobs?secret_key=x") == "s3://bucket/jobs"
