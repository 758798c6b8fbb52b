"""Admission for video jobs: the queue bound, the per-client cap, the disk bound."""

import pytest

from deployments.settings import AppArgs
from serve_app.errors import ApiError
from serve_app.job_admission import JobAdmission, client_of

ARGS = AppArgs(max_queued_jobs=3, max_jobs_per_client=2, max_jobs_bytes=1000, retry_after_s=9)


def jobs(*pairs: tuple[str, str]) -> list[dict]:
    return [{"state": state, "client": client} for state, client in pairs]


def refused(states: list[dict], client: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        JobAdmission(ARGS).check(states, client)
    return caught.value


def test_a_client_at_its_cap_is_refused_429_and_another_is_still_admitted():
    states = jobs(("running", "a"), ("queued", "a"), ("done", "b"), ("failed", "b"), ("lost", "b"))
    error = refused(states, "a")
    assert (error.status, error.code, error.headers) == (429, "too_many_jobs", {"Retry-After": "9"})
    JobAdmission(ARGS).check(states, "b")
    JobAdmission(ARGS).check(jobs(("running", "a"), ("done", "a"), ("cancelled", "a")), "a")


def test_a_full_queue_is_refused_503_with_retry_after_whoever_asks():
    states = jobs(("queued", "a"), ("queued", "b"), ("queued", "c"), ("running", "d"))
    error = refused(states, "e")
    assert (error.status, error.code, error.headers) == (503, "overloaded", {"Retry-After": "9"})
    JobAdmission(ARGS).check(states[1:], "e")


def test_an_upload_that_does_not_fit_the_jobs_disk_is_refused_507():
    admission = JobAdmission(ARGS)
    assert admission.room_bytes(usage_bytes=400, declared_bytes=600) == 600
    assert admission.room_bytes(usage_bytes=400, declared_bytes=None) == 600
    for usage, declared in ((400, 601), (1000, None), (1200, 1)):
        with pytest.raises(ApiError) as caught:
            admission.room_bytes(usage, declared)
        assert (caught.value.status, caught.value.code) == (507, "storage_full")


def test_a_client_is_its_key_else_its_address_and_the_key_is_not_kept():
    key = "Bearer secret-key-123"
    assert client_of(key, "10.0.0.1") == client_of(key, "10.0.0.2") != client_of("Bearer other", "10.0.0.1")
    assert "secret" not in client_of(key, None)
    assert client_of(None, "10.0.0.1") != client_of(None, "10.0.0.2")
