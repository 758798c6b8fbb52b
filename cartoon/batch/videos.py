"""``cartoonize-batch``'s video clips: each goes through the service's jobs API.

A clip is one job: sent (``POST /v1/jobs``), followed (``GET /v1/jobs/{id}``) until it
is finished, and its result fetched (``GET /v1/jobs/{id}/result``); ``cartoon.batch.http_engine``
writes that like a photo's output, at the clip's own relative path: the output keeps the
clip's container (the service copies the sound as it is, and a container takes the
sound its clip came with). ``cartoon.batch.http_engine`` hands in its HTTP backend and its
retry loop, so every request is retried as a photo's is (this module imports nothing of
it: ``python -m cartoon.batch.command`` would otherwise load it twice). A job the service lost
(a restart) is sent again; a job that failed is the clip's failure; a run that is
stopped (Ctrl-C) cancels the job it was following.
"""

import asyncio
from pathlib import Path

from cartoon.video.media import OUTPUT_FORMATS

# The containers the service takes are the ones it writes.
VIDEO_SUFFIXES = frozenset(f".{name}" for name in OUTPUT_FORMATS)
POLL_S = 1.0
# A lost job costs the whole clip again, so it is sent again fewer times than a request.
MAX_SUBMISSIONS = 3
# A cancel sent while the run stops gets this long: the run must not hang on it.
CANCEL_TIMEOUT_S = 5.0


class JobError(Exception):
    """A clip's job failed, or ended without a result; the clip's failure."""

    status = None  # no HTTP status: the requests themselves succeeded


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _job_params(photo_params: dict, container: str) -> dict:
    """The photos' parameters (style, strength, max_side), the clip's container instead of their format."""
    return {**{name: value for name, value in photo_params.items() if name != "format"}, "format": container}


async def _cancel(backend, job_id: str) -> None:
    """Best effort: the service would otherwise go on with a job nobody will fetch."""
    try:
        await asyncio.wait_for(backend.send("DELETE", f"/v1/jobs/{job_id}"), CANCEL_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - the run is stopping whatever the answer
        pass


async def _submitted(backend, submission):
    """The response to a clip's submission; a run stopped while it is on its way still
    waits (``CANCEL_TIMEOUT_S`` at most) for the job the service may have taken, and cancels it."""
    sending = asyncio.ensure_future(submission)
    try:
        return await asyncio.shield(sending)
    except asyncio.CancelledError:
        try:
            job = (await asyncio.wait_for(sending, CANCEL_TIMEOUT_S)).json()
        except Exception:  # noqa: BLE001 - no job, or no answer in time: nothing to cancel
            raise asyncio.CancelledError from None
        await _cancel(backend, job["id"])
        raise


async def _finished_job(backend, data: bytes, container: str, with_retries, tally) -> dict:
    """Sends the clip and follows its job until it is done; returns the job."""
    for submission in range(MAX_SUBMISSIONS):
        job = (await _submitted(backend, with_retries(lambda: backend.send(
            "POST", "/v1/jobs", params=_job_params(backend.params, container), content=data,
            headers={"Content-Type": OUTPUT_FORMATS[container][3]},
        ), tally))).json()
        try:
            while job["state"] in ("queued", "running"):
                await asyncio.sleep(POLL_S)
                job = (await with_retries(lambda: backend.send("GET", f"/v1/jobs/{job['id']}"), tally)).json()
        except asyncio.CancelledError:
            await _cancel(backend, job["id"])
            raise
        if job["state"] == "done":
            return job
        if job["state"] == "failed":
            error = job.get("error") or {}
            raise JobError(f"job failed: {error.get('code')}: {error.get('message')}")
        if job["state"] != "lost" or submission == MAX_SUBMISSIONS - 1:
            raise JobError(f"job {job['id']} ended {job['state']}")
        tally.retries += 1
    raise AssertionError("unreachable: the last submission returns or raises")


async def cartoonize(backend, data: bytes, suffix: str, with_retries, tally) -> bytes:
    """The clip cartoonized, with its sound, in the clip's container.

    Args:
        backend: ``cartoon.batch.http_engine``'s backend; only its service backend (``send``) has jobs.
        data: the clip's bytes; ``suffix`` names its container (``.mp4``, ...).
        with_retries: ``cartoon.batch.http_engine.with_retries``; ``tally`` counts the retries.

    Raises:
        JobError: the job failed or ended without a result.
        cartoon.batch.files.Failure: a request failed past its retries.
    """
    if not hasattr(backend, "send"):
        raise JobError("video clips are cartoonized by the service: give --url")
    job = await _finished_job(backend, data, suffix.lower().lstrip("."), with_retries, tally)
    return (await with_retries(lambda: backend.send("GET", f"/v1/jobs/{job['id']}/result"), tally)).content
