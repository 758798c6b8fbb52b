"""``cartoonize-batch``'s video clips: each goes through the service's jobs API.

A clip is one job: sent (``POST /v1/jobs``), followed (``GET /v1/jobs/{id}``) until it
is finished, and its result fetched (``GET /v1/jobs/{id}/result``); ``cartoon.folder``
writes that like a photo's output. Every request is retried as a photo's is
(``cartoon.folder.with_retries``); a job the service lost (a restart) is sent again, as
many times as a photo is retried; a job that failed is the clip's failure; a run that is
stopped (Ctrl-C) cancels the jobs it had in flight.
"""

import asyncio
from pathlib import Path

from cartoon import folder

MEDIA_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm", ".mkv": "video/x-matroska"}
VIDEO_SUFFIXES = set(MEDIA_TYPES)
OUTPUT_FORMAT = "mp4"
OUTPUT_SUFFIX = ".mp4"
POLL_S = 1.0
# A cancel sent while the run stops gets this long: the run must not hang on it.
CANCEL_TIMEOUT_S = 5.0


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _job_params(backend: "folder.ServiceBackend") -> dict:
    """The photos' parameters less their image format, plus the video's."""
    params = {name: value for name, value in backend.params.items() if name != "format"}
    return {**params, "format": OUTPUT_FORMAT}


async def _finished_job(backend: "folder.ServiceBackend", data: bytes, suffix: str, tally: "folder.Tally") -> dict:
    """Sends the clip and follows its job until it is done; returns the job."""
    for attempt in range(folder.MAX_ATTEMPTS):
        submitted = await folder.with_retries(lambda: backend.send(
            "POST", "/v1/jobs", params=_job_params(backend), content=data,
            headers={"Content-Type": MEDIA_TYPES[suffix.lower()]},
        ), tally)
        job = submitted.json()
        try:
            while job["state"] in ("queued", "running"):
                await asyncio.sleep(POLL_S)
                job = (await folder.with_retries(lambda: backend.send("GET", f"/v1/jobs/{job['id']}"), tally)).json()
        except asyncio.CancelledError:
            await _cancel(backend, job["id"])
            raise
        if job["state"] == "done":
            return job
        if job["state"] == "failed":
            error = job.get("error") or {}
            raise folder.Failure(f"job failed: {error.get('code')}: {error.get('message')}")
        if job["state"] != "lost" or attempt == folder.MAX_ATTEMPTS - 1:
            raise folder.Failure(f"job {job['id']} ended {job['state']}")
        tally.retries += 1
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _cancel(backend: "folder.ServiceBackend", job_id: str) -> None:
    """Best effort: the service would otherwise go on with a job nobody will fetch."""
    try:
        await asyncio.wait_for(backend.send("DELETE", f"/v1/jobs/{job_id}"), CANCEL_TIMEOUT_S)
    except (folder.Failure, TimeoutError):
        pass


async def cartoonize(backend, data: bytes, suffix: str, tally: "folder.Tally") -> bytes:
    """The cartoonized clip (the service's ``OUTPUT_FORMAT``), with its sound."""
    if not isinstance(backend, folder.ServiceBackend):
        raise folder.Failure("video clips are cartoonized by the service: give --url")
    job = await _finished_job(backend, data, suffix, tally)
    result = await folder.with_retries(lambda: backend.send("GET", f"/v1/jobs/{job['id']}/result"), tally)
    return result.content
