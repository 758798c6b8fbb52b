"""A clip's job is cancelled when the run stops, whenever the stop comes (cartoon.batch.videos)."""

import asyncio

import pytest

from cartoon.batch import videos
from cartoon.batch.http_engine import Tally, with_retries


class Answer:
    def __init__(self, body: dict):
        self.body = body

    def json(self) -> dict:
        return self.body


class SlowService:
    """Answers a submission after ``submit_s`` with a queued job that never finishes, and
    records every request: the stand-in for the service's jobs API."""

    def __init__(self, submit_s: float):
        self.submit_s = submit_s
        self.params = {"style": "toon"}
        self.sent: list[tuple[str, str]] = []

    async def send(self, method: str, path: str, **_) -> Answer:
        self.sent.append((method, path))
        if method == "POST":
            await asyncio.sleep(self.submit_s)
        return Answer({"id": "job-1", "state": "queued"})


async def stopped_after(service: SlowService, seconds: float) -> None:
    run = asyncio.ensure_future(videos.cartoonize(service, b"clip", ".mp4", with_retries, Tally()))
    await asyncio.sleep(seconds)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


@pytest.mark.parametrize("stopped", ["while the clip is on its way", "while following its job"])
def test_a_stopped_run_cancels_the_job_the_service_took(stopped):
    # Submitted in 0.2 s; the first poll comes a second later.
    service = SlowService(submit_s=0.2)
    asyncio.run(stopped_after(service, 0.05 if stopped == "while the clip is on its way" else 0.5))
    assert service.sent[0] == ("POST", "/v1/jobs")
    assert ("DELETE", "/v1/jobs/job-1") in service.sent


def test_a_run_stopped_before_any_answer_gives_up_after_the_cancel_timeout(monkeypatch):
    monkeypatch.setattr(videos, "CANCEL_TIMEOUT_S", 0.1)
    service = SlowService(submit_s=60.0)
    elapsed = asyncio.run(timed_stop(service))
    assert elapsed < 5.0
    assert [method for method, _ in service.sent] == ["POST"]


async def timed_stop(service: SlowService) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await stopped_after(service, 0.05)
    return loop.time() - start
