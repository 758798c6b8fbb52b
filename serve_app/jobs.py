"""Video jobs over HTTP: POST a clip, poll its progress, fetch the cartoonized clip, or cancel.

``router`` is included in the Ingress's FastAPI app. The Ingress only takes the upload
(checking its header), admits the job (``serve_app.job_admission``) and hands it to the
``VideoJobRunner`` deployment (``serve_app.job_dispatch``), where it is decoded, tracked,
cartoonized through the served graph and encoded. State, upload and result live in the
job store (``deployments.job_store``), which every replica on every node sees, so any
Ingress replica answers for any job.
"""

import asyncio
import dataclasses
import pathlib
import shutil
import tempfile
from typing import Literal

import ray
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import iterate_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from cartoon.image.pipeline import Options
from cartoon.image.styles import StyleRegistry
from cartoon.video import media
from deployments.job_store import JobGone, JobStore, canonical_id
from deployments.settings import AppArgs
from serve_app import access, multipart
from serve_app.errors import ERROR_SCHEMA, ApiError, to_api_error
from serve_app.job_admission import JobAdmission, client_of, storage_full
from serve_app.job_dispatch import Dispatcher

CHUNK_BYTES = 1 << 20

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


# Documented as a UUID in its canonical spelling (what ids are); any other spelling of the
# same UUID names the same job, anything else is simply unknown (404).
JOB_ID = Path(
    description="the id POST /v1/jobs answered",
    json_schema_extra={"pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"},
)


def _errors(*pairs: tuple[int, str]) -> dict:
    return {status: {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for status, description in pairs}


router = APIRouter(prefix="/v1/jobs", tags=["video jobs"])


class JobService:
    """One Ingress replica's side of the video jobs: the store, admission and dispatch.

    Made in the Ingress's constructor, on its event loop, where the sweep's timer starts.
    """

    def __init__(self, args: AppArgs, registry: StyleRegistry, runners: DeploymentHandle):
        self.args = args
        self.registry = registry
        self.store = JobStore(args.jobs_dir, args.job_lost_after_s)
        self.admission = JobAdmission(args)
        # A key tells clients apart only when the service checks it; else anyone could
        # send a new made-up key with each job and escape the per-client cap.
        self.keyed = access.resolve_api_key(args) is not None
        self.dispatcher = Dispatcher(self.store, runners, args)
        # Held, so the timer's task is not garbage-collected while it sleeps.
        self._sweeping = asyncio.ensure_future(self.dispatcher.sweep_forever())


def service() -> JobService:
    return serve.get_replica_context().servable_object.jobs


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


async def _existing(store: JobStore, job_id: str) -> tuple[str, dict]:
    """The job's canonical id and state, whichever spelling of its UUID the client sent.

    Raises:
        ApiError: 404 for an id that is no UUID or no job.
    """
    canonical = canonical_id(job_id)
    state = None if canonical is None else await asyncio.to_thread(store.read, canonical)
    if state is None:
        raise _not_found(job_id)
    return canonical, state


async def _save_body(request: Request, path, limit: int, room: int, retry_after_s: int) -> None:
    """Streams the body to ``path``; the multipart field ``video`` when it is multipart.

    Raises:
        ApiError: 413 past ``limit`` bytes; 507 past ``room`` bytes (the jobs' disk bound).
    """
    multipart.check_declared_length(request, limit)
    if multipart.media_type(request) != "multipart/form-data":
        await _stream_to(path, request.stream(), limit, room, retry_after_s)
        return
    raw = path.with_suffix(".multipart")
    await _stream_to(raw, request.stream(), limit, room, retry_after_s)

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


async def _stream_to(path, stream, limit: int, room: int, retry_after_s: int) -> None:
    size = 0
    with path.open("wb") as handle:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"the body is over the limit of {limit} bytes")
            if size > room:
                raise storage_full(retry_after_s)
            handle.write(chunk)


def _declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


@router.post(
    "",
    status_code=202,
    openapi_extra=VIDEO_BODY,
    responses={
        202: {"description": "the job, queued; `Location` names it", "content": {"application/json": {"schema": JOB_SCHEMA}}},
        **_errors((400, "not a video or a broken one (not_a_video, corrupt_video, bad_multipart)"),
                  (413, "over a limit (body_too_large, video_too_long, too_many_pixels)"),
                  (422, "a bad parameter (invalid_parameter, unknown_style, audio_not_muxable)"),
                  (429, "this client has its cap of queued and running jobs (too_many_jobs); see Retry-After"),
                  (503, "the jobs queue is full (overloaded); see Retry-After"),
                  (507, "the jobs' storage is full (storage_full); see Retry-After")),
    },
)
async def submit_job(request: Request, query: JobQuery = Depends()) -> JSONResponse:
    """Takes a video (MP4, MOV, MKV or WebM; the body, or multipart field `video`) and queues it.

    Answers 202 at once with the job; poll `GET /v1/jobs/{id}`, then fetch `/result`.
    Every frame is cartoonized; frame rate, timestamps, rotation and the audio are kept.
    Each client (API key, else address) may have a few jobs queued or running at once.
    """
    jobs = service()
    args, store = jobs.args, jobs.store
    try:
        style = jobs.registry.get(query.options.style).name
    except KeyError as exc:
        raise ApiError(422, "unknown_style", exc.args[0]) from exc
    client = client_of(request.headers.get("authorization") if jobs.keyed else None,
                       request.client.host if request.client else None)
    jobs.admission.check(await asyncio.to_thread(lambda: list(store.jobs())), client)
    room = jobs.admission.room_bytes(await asyncio.to_thread(store.usage_bytes), _declared_length(request))
    options = dataclasses.asdict(dataclasses.replace(query.options, style=style))
    job_id = store.create({"format": query.format, "media_type": media.OUTPUT_FORMATS[query.format][3],
                           "style": style, "options": options, "client": client,
                           "taken_on": ray.get_runtime_context().get_node_id()})
    # Held from here while the upload arrives: a slow upload must not look like a lost job.
    jobs.dispatcher.hold(job_id)
    try:
        # PyAV checks a local file: the body is staged here, checked, then stored.
        with tempfile.TemporaryDirectory(prefix="cartoon-upload-") as scratch:
            upload = pathlib.Path(scratch) / "input"
            await _save_body(request, upload, args.max_video_bytes, room, args.retry_after_s)
            limits = media.VideoLimits(args.max_video_seconds, args.max_video_pixels)
            info = await asyncio.to_thread(media.probe, upload, limits)
            await asyncio.to_thread(media.check_output, upload, query.format)
            await asyncio.to_thread(store.put_input, job_id, upload)
        state = await asyncio.to_thread(store.update, job_id, progress={
            "frames_done": 0, "frames_total": info.frames, "fps": 0.0, "eta_s": None})
    except BaseException as exc:
        jobs.dispatcher.release(job_id)
        await asyncio.to_thread(store.delete, job_id)
        error = exc if isinstance(exc, ApiError) else to_api_error(exc, args.retry_after_s, 0)
        if error is None:
            raise
        raise error from exc
    jobs.dispatcher.send(job_id, 0)
    location = f"{request.scope.get('root_path', '')}/v1/jobs/{job_id}"
    return _job_response(state, 202, {"Location": location})


@router.get("/{job_id}", responses={200: {"content": {"application/json": {"schema": JOB_SCHEMA}}},
                                    **_errors((404, "no such job (job_not_found)"))})
async def get_job(job_id: str = JOB_ID) -> JSONResponse:
    """The job's state and progress (frames done and total, frames per second, seconds left)."""
    _, state = await _existing(service().store, job_id)
    return _job_response(state)


@router.get(
    "/{job_id}/result",
    responses={200: {"description": "the cartoonized video",
                     "content": {media_type: {"schema": {"type": "string", "format": "binary"}}
                                 for *_, media_type in media.OUTPUT_FORMATS.values()}},
               **_errors((404, "no such job (job_not_found)"), (409, "the job is not done (job_not_done)"))},
)
async def get_result(job_id: str = JOB_ID) -> StreamingResponse:
    """The cartoonized video, once the job is done."""
    store = service().store
    job_id, state = await _existing(store, job_id)
    if state["state"] != "done":
        raise ApiError(409, "job_not_done", f"the job is {state['state']}; its result comes when it is done")
    size = await asyncio.to_thread(store.output_size, job_id, state["format"])
    if size is None:  # deleted since the state was read
        raise _not_found(job_id)
    return StreamingResponse(
        iterate_in_threadpool(store.read_output(job_id, state["format"])), media_type=state["media_type"],
        headers={"Content-Length": str(size),
                 "Content-Disposition": f'attachment; filename="cartoon-{job_id}.{state["format"]}"'},
    )


@router.delete("/{job_id}", responses={200: {"content": {"application/json": {"schema": JOB_SCHEMA}}},
                                       **_errors((404, "no such job (job_not_found)"))})
async def cancel_job(job_id: str = JOB_ID) -> JSONResponse:
    """Cancels a queued or running job (its state becomes cancelled, its upload is deleted).

    A finished job (done, failed, cancelled or lost) is deleted with every file of it:
    the answer is its last state, and the job is unknown (404) from then on.
    """
    store = service().store
    job_id, state = await _existing(store, job_id)
    if await asyncio.to_thread(store.ended, job_id):
        await asyncio.to_thread(store.delete, job_id)
        return _job_response(state)
    try:
        await asyncio.to_thread(store.cancel, job_id)
    except JobGone as exc:  # deleted between the read and the cancel
        raise _not_found(job_id) from exc
    _, state = await _existing(store, job_id)
    return _job_response(state)
