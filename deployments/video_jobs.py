"""VideoJobRunner: runs video jobs, away from the Ingress, on CPUs of its own.

The Ingress takes the upload and sends the job's id here (``run``); Serve routes it to
a runner with a free slot (``max_ongoing_requests`` = ``video_jobs_per_replica``), and
queues it at the Ingress while every slot is busy, so the first runner that frees up
takes the next job and the autoscaler sees queued plus running jobs. A runner decodes,
tracks faces, applies the temporal finish and encodes (``cartoon.video.clip``); every
frame goes through the served graph, FaceAligner -> Cartoonizer -> Postprocessor,
several at once, so the Cartoonizer batches their pieces with everyone else's.

State and files live in ``jobs_dir`` (``deployments.job_store``), which every node sees.
A runner told to stop (a downscale, a redeploy) finishes its jobs within its graceful
shutdown time; one killed before gives its jobs back: the Ingress that sent them sends
them again (``serve_app.job_dispatch``).
"""

import asyncio
import logging
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import ray
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from cartoon.errors import PoisonFrameError
from cartoon.image.faces import Face, FaceDetector
from cartoon.image.finish import FINISHES
from cartoon.image.pipeline import Job, Options
from cartoon.image.styles import StyleRegistry
from cartoon.video import media
from cartoon.video.clip import ClipSettings, Progress, cartoonize_clip
from cartoon.video.tracking import TrackerSettings
from deployments.failures import replica_lost
from deployments.job_store import CANCELLED_ERROR, Heartbeats, JobGone, JobStore
from deployments.resend import digest, with_resends
from deployments.settings import AppArgs
from deployments.shared_book import Evidence
from deployments.trials import compose_frame_alone, run_alone, stylize_frame_alone

_logger = logging.getLogger("ray.serve")

# A frame refused by a full queue or caught by a dying replica is sent again after this
# (doubled each time, ``FRAME_RETRIES`` times): a long job must not fail on one busy moment.
FRAME_RETRY_S = 0.5
FRAME_RETRIES = 6
# Progress is written at most this often (and at the last frame): each write is a file replaced.
PROGRESS_EVERY_S = 0.5


class JobCancelled(Exception):
    """The client cancelled the job (``DELETE``), seen by its runner between two frames."""


class Superseded(Exception):
    """The job was sent again (its holder looked dead): this older attempt stops."""


class ServedStages:
    """``cartoon.video.clip.FrameStages`` through the served graph, one call per frame and stage.

    A frame follows the images' rule (``deployments.resend``): a frame in flight on a
    replica whose process died is tried alone, and one that takes its trial down too
    fails the job (422 ``poison_frame``).
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


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=1)
class VideoJobRunner:
    def __init__(self, aligner: DeploymentHandle, cartoonizer: DeploymentHandle, postprocessor: DeploymentHandle,
                 args: AppArgs, registry: StyleRegistry):
        self.args = args
        self.registry = registry
        self.store = JobStore(args.jobs_dir, args.job_lost_after_s)
        self.detector = FaceDetector(args.pipeline_settings().detector)
        self.handles = (aligner, cartoonizer, postprocessor)
        self.heartbeats = Heartbeats(self.store, args.job_lost_after_s / 4)
        self.evidence = Evidence(serve.get_replica_context().app_name, args.poison_ttl_s, args.request_timeout_s)

    async def run(self, job_id: str, attempt: int) -> str:
        """Runs attempt ``attempt`` of a queued job to its end; returns the state it ended in.

        A job cancelled meanwhile ends ``cancelled``; an attempt that is no longer the
        job's newest, or a job deleted meanwhile, does nothing.

        Raises:
            Exception: what failed the job; the Ingress that sent it chooses its error.
        """
        state = await asyncio.to_thread(self.store.read, job_id)
        if state is None or state["attempt"] != attempt:
            return "superseded"
        if state["state"] == "cancelled":
            await asyncio.to_thread(self._finish, job_id, attempt, state="cancelled", error=CANCELLED_ERROR)
            return "cancelled"
        if state["state"] != "queued":  # this attempt already ran: it is never run twice
            return state["state"]
        self.heartbeats.start(job_id)
        try:
            return await self._run(job_id, attempt, state)
        except (JobGone, Superseded):
            return "superseded"
        finally:
            self.heartbeats.stop(job_id)

    def _update(self, job_id: str, attempt: int, **fields) -> dict:
        """Writes the job's state, unless a newer attempt owns it now (or it was deleted).

        Raises:
            Superseded: a newer attempt of the job was sent.
            JobGone: the job was deleted.
        """
        current = self.store.read(job_id)
        if current is None:
            raise JobGone(job_id)
        if current["attempt"] != attempt:
            raise Superseded(job_id)
        return self.store.update(job_id, **fields)

    def _finish(self, job_id: str, attempt: int, **fields) -> None:
        self._update(job_id, attempt, finished_at=time.time(), **fields)
        self.store.remove_input(job_id)

    async def _run(self, job_id: str, attempt: int, state: dict) -> str:
        # PyAV reads and writes local files: the upload is fetched into a scratch folder
        # of this replica's and the result stored from it whole, once done, so no reader
        # ever sees part of a result, whatever the store.
        with tempfile.TemporaryDirectory(prefix="cartoon-job-") as scratch:
            return await self._run_in(job_id, attempt, state, Path(scratch))

    async def _run_in(self, job_id: str, attempt: int, state: dict, scratch: Path) -> str:
        store = self.store
        output_format = state["format"]
        source, output = scratch / "input", scratch / f"output.{output_format}"
        last_write = 0.0

        def on_progress(progress: Progress) -> None:
            nonlocal last_write
            if store.cancel_requested(job_id):
                raise JobCancelled
            if time.monotonic() - last_write > PROGRESS_EVERY_S or progress.frames_done == progress.frames_total:
                self._update(job_id, attempt, progress=progress.public())
                last_write = time.monotonic()

        try:
            await asyncio.to_thread(self._update, job_id, attempt, state="running", started_at=time.time(),
                                    run_on=ray.get_runtime_context().get_node_id())
            await asyncio.to_thread(store.fetch_input, job_id, source)
            limits = media.VideoLimits(self.args.max_video_seconds, self.args.max_video_pixels)
            info = await asyncio.to_thread(media.probe, source, limits)
            options = Options(**state["options"])
            style = self.registry.get(options.style)
            settings = ClipSettings(tracker=TrackerSettings(detect_every=self.args.video_detect_every),
                                    frames_in_flight=self.args.video_frames_in_flight,
                                    max_output_pixels=self.args.max_output_pixels)
            report = await cartoonize_clip(
                source, output, info, output_format, options,
                ServedStages(*self.handles, style.name, self.evidence, self.args, self.registry), self.detector,
                FINISHES[style.finish] if style.finish else None, settings, on_progress,
            )
            await asyncio.to_thread(store.put_output, job_id, output_format, output)
        except (JobGone, Superseded):
            raise  # the files are no longer this attempt's to touch
        except JobCancelled:
            await asyncio.to_thread(self._finish, job_id, attempt, state="cancelled", error=CANCELLED_ERROR)
            return "cancelled"
        # Not a stop (CancelledError: this replica is going, or its caller cancelled),
        # which keeps the upload, so the job can be sent again.
        except Exception:
            await asyncio.to_thread(store.remove_input, job_id)
            raise
        progress = Progress(report.frames, report.frames, report.frames / report.seconds, 0.0)
        await asyncio.to_thread(self._finish, job_id, attempt, state="done", progress=progress.public())
        return "done"
