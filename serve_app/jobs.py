"""Video jobs over HTTP: POST a clip, poll its progress, fetch the cartoonized clip, or cancel.

``router`` is included in the Ingress's FastAPI app. A job runs in the Ingress replica
that took it (``JobRunner``), as an asyncio task: decoding, face tracking, the temporal
finish and encoding run on its threads (``cartoon.video.clip``), and every frame goes through
the served graph, FaceAligner -> Cartoonizer -> Postprocessor, several frames at once, so
the Cartoonizer batches their pieces with every other request's. State, upload and
result live on disk (``serve_app.job_store``), so every replica answers for every job,
and a job whose replica is gone is reported lost.
"""

import asyncio
import logging
import shutil
import time
from dataclasses import replace
from functools import partial
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from cartoon.errors import PoisonFrameError
from cartoon.video import media
from cartoon.video.clip import ClipSettings, Progress, cartoonize_clip
from cartoon.image.faces import Face, FaceDetector
from cartoon.image.finish import FINISHES
from cartoon.image.pipeline import Job, Options
from cartoon.image.styles import StyleRegistry
from cartoon.video.tracking import TrackerSettings
from deployments.settings import AppArgs
from serve_app import multipart
from serve_app.errors import ERROR_SCHEMA, ApiError, replica_lost, to_api_error
from serve_app.job_store import CANCELLED_ERROR, JobStore
from serve_app.resend import digest, with_resends
from serve_app.shared_book import Evidence
from serve_app.trials import compose_frame_alone, run_alone, stylize_frame_alone

_logger = logging.getLogger("ray.serve")

CHUNK_BYTES = 1 << 20
# A frame refused by a full queue or caught by a dying replica is sent again after this
# (doubled each time, ``FRAME_RETRIES`` times): a long job must not fail on one busy moment.
FRAME_RETRY_S = 0.5
FRAME_RETRIES = 6

JOB_SCHEMA = {
    "type": "object",
    "required": ["id", "state", "progress", "error"],
    "properties": {
        "id": {"type": "string"},
        "state": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled", "lost"]},
        "progress": {
            "type": "object",
            "properties": {"frames_done": {"type": "integer"}, "frames_total": {"type": "integer"},
                           "fps": {"type": "number"}, "eta_s": {"type": ["number", "null"]}},
        },
        "error": {"oneOf": [{"type": "null"}, ERROR_SCHEMA["properties"]["error"]]},
        "format": {"type": "string"},
        "media_type": {"type": "string"},
        "created_at": {"type": "number"},
        "updated_at": {"type": "number"},
    },
}
VIDEO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **{media_type: {"schema": {"type": "string", "format": "binary"}}
               for media_type in ("video/mp4", "video/quicktime", "video/webm", "video/x-matroska",
                                  "application/octet-stream")},
            "multipart/form-data": {"schema": {"type": "object", "required": ["video"],
                                               "properties": {"video": {"type": "string", "format": "binary"}}}},
        },
    }
}


# Documented as a UUID (what ids are), not enforced: any other id is simply unknown (404).
JOB_ID = Path(
    description="the id POST /v1/jobs answered",
    json_schema_extra={"pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"},
)


def _errors(*pairs: tuple[int, str]) -> dict:
    return {status: {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for status, description in pairs}


router = APIRouter(prefix="/v1/jobs", tags=["video jobs"])


class JobCancelled(Exception):
    """The client cancelled the job (``DELETE``), seen by its runner between two frames."""


class JobRunner:
    """The video jobs of one Ingress replica, and the disk they live on."""

    def __init__(self, args: AppArgs, registry: StyleRegistry, aligner: DeploymentHandle,
                 cartoonizer: DeploymentHandle, postprocessor: DeploymentHandle, evidence: Evidence):
        self.args = args
        self.store = JobStore(args.jobs_dir, args.job_lost_after_s)
        self.registry = registry
        self.detector = FaceDetector(args.pipeline_settings().detector)
        self.handles = (aligner, cartoonizer, postprocessor)
        self.evidence = evidence
        self.slots = asyncio.Semaphore(args.video_jobs_per_replica)
        self.running: dict[str, asyncio.Task] = {}
        self._heartbeat = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        """Keeps this replica's jobs from looking lost while they wait or run.

        On the event loop, as every other write of a job's state here: a write from a
        thread could read a job's state just before its runner wrote "done" and then
        write "running" back over it.
        """
        while True:
            await asyncio.sleep(self.args.job_lost_after_s / 4)
            for job_id in list(self.running):
                self.store.update(job_id)

    def submit(self, job_id: str, options: Options, output_format: str, info: media.VideoInfo) -> None:
        task = asyncio.ensure_future(self._run(job_id, options, output_format, info))
        self.running[job_id] = task
        task.add_done_callback(lambda _: self.running.pop(job_id, None))

    async def _run(self, job_id: str, options: Options, output_format: str, info: media.VideoInfo) -> None:
        store = self.store
        output = store.output_path(job_id, output_format)
        last_write = 0.0

        def on_progress(progress: Progress) -> None:
            nonlocal last_write
            if store.cancel_requested(job_id):
                raise JobCancelled
            if time.monotonic() - last_write > 0.5 or progress.frames_done == progress.frames_total:
                store.update(job_id, progress=progress.public())
                last_write = time.monotonic()

        try:
            async with self.slots:
                if store.cancel_requested(job_id):
                    return
                store.update(job_id, state="running", started_at=time.time())
                settings = ClipSettings(tracker=TrackerSettings(detect_every=self.args.video_detect_every),
                                        frames_in_flight=self.args.video_frames_in_flight,
                                        max_output_pixels=self.args.max_output_pixels)
                style = self.registry.get(options.style)
                stages = ServedStages(*self.handles, style.name, self.evidence, self.args, self.registry)
                report = await cartoonize_clip(
                    store.input_path(job_id), output, info, output_format, options, stages, self.detector,
                    FINISHES[style.finish] if style.finish else None, settings, on_progress,
                )
            store.update(job_id, state="done", finished_at=time.time(), progress=Progress(
                report.frames, report.frames, report.frames / report.seconds, 0.0).public())
            store.input_path(job_id).unlink(missing_ok=True)
        except JobCancelled:
            output.unlink(missing_ok=True)
            store.update(job_id, state="cancelled", error=CANCELLED_ERROR)
        except asyncio.CancelledError:
            # The replica is shutting down: the job stops beating and reads "lost".
            output.unlink(missing_ok=True)
            raise
        except Exception as exc:
            output.unlink(missing_ok=True)
            error = to_api_error(exc, self.args.retry_after_s, self.args.request_timeout_s)
            if error is None:
                _logger.exception("video job %s failed", job_id)
                error = ApiError(500, "internal", "the video could not be processed; this is our bug")
            store.update(job_id, state="failed", error=error.body()["error"], finished_at=time.time())


class ServedStages:
    """``cartoon.video.clip.FrameStages`` through the served graph, one call per frame and stage.

    A frame follows the images' rule (``serve_app.resend``): a frame in flight on a replica
    whose process died is tried alone, and one that takes its trial down too fails the job
    (422 ``poison_frame``).
    """

    def __init__(self, aligner: DeploymentHandle, cartoonizer: DeploymentHandle, postprocessor: DeploymentHandle,
                 style: str, evidence: Evidence, args: AppArgs, registry: StyleRegistry):
        self.aligner = aligner
        self.cartoonizer = cartoonizer.options(multiplexed_model_id=style)
        self.postprocessor = postprocessor
        self.evidence, self.args, self.registry = evidence, args, registry

    async def _retried(self, call, alone, key: str):
        """Awaits ``call()``, sent again while the graph is full or its replica was lost."""
        return await with_resends(
            call, lambda: alone(timeout_s=self.args.request_timeout_s), key, self.evidence, FRAME_RETRIES,
            deadline=float("inf"), poisoned=lambda: PoisonFrameError(
                "a frame of this video took down a replica, then the process it was tried in alone"),
            retryable=lambda exc: isinstance(exc, BackPressureError) or replica_lost(exc),
            wait_s=lambda attempt: FRAME_RETRY_S * 2**attempt,
        )

    async def stylize(self, rgb: np.ndarray, faces: list[Face], options: Options) -> Job:
        async def through_graph() -> Job:
            pieces, full_size = (await self.aligner.prepare_frame.remote(rgb, options, faces)).split_full_size()
            stylized = await self.cartoonizer.stylize.remote(pieces, finish=False)
            return stylized.with_full_size(full_size)

        alone = partial(run_alone, stylize_frame_alone, self.args, self.registry, rgb, faces, options)
        key = await asyncio.to_thread(digest, b"stylize", rgb)
        return await self._retried(through_graph, alone, key)

    async def compose(self, job: Job) -> np.ndarray:
        pieces, full_size = job.split_full_size()
        alone = partial(run_alone, compose_frame_alone, job)
        key = await asyncio.to_thread(digest, b"compose", job.heads, job.background)
        return await self._retried(lambda: self.postprocessor.compose_frame.remote(pieces, full_size), alone, key)


_runner: JobRunner | None = None


def runner() -> JobRunner:
    """This replica's runner, made on first use from the Ingress's own config and handles."""
    global _runner
    if _runner is None:
        ingress = serve.get_replica_context().servable_object
        _runner = JobRunner(ingress.args, ingress.registry, ingress.aligner, ingress.cartoonizer,
                            ingress.postprocessor, ingress.evidence)
    return _runner


class JobQuery:
    def __init__(
        self,
        style: str | None = Query(None, description="style name from GET /v1/styles; default style if omitted"),
        strength: float = Query(1.0, ge=0.0, le=1.0, description="1 = full cartoon, 0 = the original"),
        max_side: int | None = Query(None, ge=16, le=16384, description="cap on the frames' long side"),
        format: Literal["mp4", "mov", "mkv", "webm"] = Query(
            "mp4", description="output container: H.264 in mp4, mov and mkv, VP9 in webm; the audio is copied"
        ),
    ):
        self.options = Options(style=style, strength=strength, max_side=max_side)
        self.format = format


def _public(state: dict) -> dict:
    return {key: state[key] for key in ("id", "state", "progress", "error", "format", "media_type",
                                        "created_at", "updated_at") if key in state}


def _job_response(state: dict, status: int = 200, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(_public(state), status_code=status, headers=headers)


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"no job {job_id!r} (unknown, or deleted after its retention time)")


async def _save_body(request: Request, path, limit: int) -> None:
    """Streams the body to ``path``; the multipart field ``video`` when it is multipart."""
    multipart.check_declared_length(request, limit)
    if multipart.media_type(request) != "multipart/form-data":
        await _stream_to(path, request.stream(), limit)
        return
    raw = path.with_suffix(".multipart")
    await _stream_to(raw, request.stream(), limit)

    async def chunks():
        with raw.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    try:
        form = await MultiPartParser(request.headers, chunks(), max_files=1, max_fields=8).parse()
    except MultiPartException as exc:
        raise ApiError(400, "bad_multipart", f"the multipart body is malformed: {exc.message}") from exc
    finally:
        raw.unlink(missing_ok=True)
    try:
        upload = form.get("video")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "invalid_parameter", "a multipart body needs one file field 'video'")
        with path.open("wb") as handle:
            await asyncio.to_thread(shutil.copyfileobj, upload.file, handle)
    finally:
        await form.close()


async def _stream_to(path, stream, limit: int) -> None:
    size = 0
    with path.open("wb") as handle:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"the body is over the limit of {limit} bytes")
            handle.write(chunk)


@router.post(
    "",
    status_code=202,
    openapi_extra=VIDEO_BODY,
    responses={
        202: {"description": "the job, queued; `Location` names it", "content": {"application/json": {"schema": JOB_SCHEMA}}},
        **_errors((400, "not a video or a broken one (not_a_video, corrupt_video, bad_multipart)"),
                  (413, "over a limit (body_too_large, video_too_long, too_many_pixels)"),
                  (422, "a bad parameter (invalid_parameter, unknown_style, audio_not_muxable)")),
    },
)
async def submit_job(request: Request, query: JobQuery = Depends()) -> JSONResponse:
    """Takes a video (MP4, MOV, MKV or WebM; the body, or multipart field `video`) and queues it.

    Answers 202 at once with the job; poll `GET /v1/jobs/{id}`, then fetch `/result`.
    Every frame is cartoonized; frame rate, timestamps, rotation and the audio are kept.
    """
    jobs = runner()
    try:
        style = jobs.registry.get(query.options.style).name
    except KeyError as exc:
        raise ApiError(422, "unknown_style", exc.args[0]) from exc
    await asyncio.to_thread(jobs.store.purge, jobs.args.job_retention_s)
    job_id = jobs.store.create({"format": query.format, "media_type": media.OUTPUT_FORMATS[query.format][3],
                                "style": style})
    try:
        await _save_body(request, jobs.store.input_path(job_id), jobs.args.max_video_bytes)
        limits = media.VideoLimits(jobs.args.max_video_seconds, jobs.args.max_video_pixels)
        info = await asyncio.to_thread(media.probe, jobs.store.input_path(job_id), limits)
        await asyncio.to_thread(media.check_output, jobs.store.input_path(job_id), query.format)
    except BaseException as exc:
        shutil.rmtree(jobs.store.root / job_id, ignore_errors=True)
        error = exc if isinstance(exc, ApiError) else to_api_error(exc, jobs.args.retry_after_s, 0)
        if error is None:
            raise
        raise error from exc
    state = jobs.store.update(job_id, progress={"frames_done": 0, "frames_total": info.frames, "fps": 0.0,
                                                "eta_s": None})
    jobs.submit(job_id, replace(query.options, style=style), query.format, info)
    location = f"{request.scope.get('root_path', '')}/v1/jobs/{job_id}"
    return _job_response(state, 202, {"Location": location})


@router.get("/{job_id}", responses={200: {"content": {"application/json": {"schema": JOB_SCHEMA}}},
                                    **_errors((404, "no such job (job_not_found)"))})
async def get_job(job_id: str = JOB_ID) -> JSONResponse:
    """The job's state and progress (frames done and total, frames per second, seconds left)."""
    state = await asyncio.to_thread(runner().store.read, job_id)
    if state is None:
        raise _not_found(job_id)
    return _job_response(state)


@router.get(
    "/{job_id}/result",
    responses={200: {"description": "the cartoonized video",
                     "content": {media_type: {"schema": {"type": "string", "format": "binary"}}
                                 for *_, media_type in media.OUTPUT_FORMATS.values()}},
               **_errors((404, "no such job (job_not_found)"), (409, "the job is not done (job_not_done)"))},
)
async def get_result(job_id: str = JOB_ID) -> FileResponse:
    """The cartoonized video, once the job is done."""
    store = runner().store
    state = await asyncio.to_thread(store.read, job_id)
    if state is None:
        raise _not_found(job_id)
    if state["state"] != "done":
        raise ApiError(409, "job_not_done", f"the job is {state['state']}; its result comes when it is done")
    return FileResponse(store.output_path(job_id, state["format"]), media_type=state["media_type"],
                        filename=f"cartoon-{job_id}.{state['format']}")


@router.delete("/{job_id}", responses={200: {"content": {"application/json": {"schema": JOB_SCHEMA}}},
                                       **_errors((404, "no such job (job_not_found)"))})
async def cancel_job(job_id: str = JOB_ID) -> JSONResponse:
    """Cancels a queued or running job (its state becomes cancelled); a finished job is left as it is."""
    store = runner().store
    state = await asyncio.to_thread(store.read, job_id)
    if state is None:
        raise _not_found(job_id)
    if state["state"] in ("queued", "running"):
        await asyncio.to_thread(store.cancel, job_id)
        state = await asyncio.to_thread(store.read, job_id)
    return _job_response(state)
