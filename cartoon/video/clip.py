"""A whole video through the cartoon pipeline: decode, track, stylize, finish, compose, encode.

The same core runs in the ``cartoonize`` command (``LocalStages``: this process) and in
the service (``deployments.video_jobs``: the frames go through the served graph, where the
Cartoonizer batches them with every other request's pieces). What must see the frames in
order runs here, one frame after another: decoding, face tracking, the temporal finish
and encoding. What needs no order (aligning, the UNet, composing) runs for up to
``frames_in_flight`` frames at once, so the stages overlap, and the queues between them
are bounded, so memory stays the same however long the clip.
"""

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from cartoon.video import media
from cartoon.image.background import TilePlan
from cartoon.image.compose import output_size, resize_to
from cartoon.image.faces import Face, FaceDetector
from cartoon.image.finish import Finish, Hysteresis, TemporalFinish
from cartoon.image.flow import optical_flow
from cartoon.image.pipeline import Composer, Job, Options, Pipeline, stylize_job
from cartoon.image.tone import ExposureSmoother, ToneParams
from cartoon.video.tracking import FaceTracker, TrackerSettings


@dataclass(frozen=True)
class ClipSettings:
    """How a video is cartoonized, beyond the per-frame ``Options``."""

    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    # The exposure of styles that re-expose the photo (cartoon.image.tone), held per shot:
    # the same parameters as the pipeline's (PipelineSettings.tone).
    tone: ToneParams = field(default_factory=ToneParams)
    frames_in_flight: int = 8  # frames between decoding and encoding at once
    max_output_pixels: int = 24_000_000  # as the still pipeline's: the frame is shrunk to fit


@dataclass
class Progress:
    frames_done: int
    frames_total: int
    fps: float
    eta_s: float | None

    def public(self) -> dict:
        return {"frames_done": self.frames_done, "frames_total": self.frames_total,
                "fps": round(self.fps, 2), "eta_s": None if self.eta_s is None else round(self.eta_s, 1)}


@dataclass
class ClipReport:
    frames: int  # frames written
    seconds: float  # wall time, end to end
    # Busy time of each step, summed over frames (steps overlap); align, background and
    # unet as the stages timed themselves (unet: from the frame's arrival at the UNet).
    stage_seconds: dict[str, float]


class FrameStages(Protocol):
    """Where a frame's unordered work runs: in this process or through the served graph."""

    async def stylize(self, rgb: np.ndarray, faces: list[Face], options: Options) -> Job:
        """The frame prepared with the given faces and stylized, without the style's finish."""

    async def compose(self, job: Job) -> np.ndarray:
        """The finished job's (height, width, 3) uint8 picture."""


def frame_size(info: media.VideoInfo, max_side: int | None, max_pixels: int) -> tuple[int, int]:
    """(height, width) of the output's frames, upright: the still pipeline's rule, sides made even."""
    height, width = (info.height, info.width) if info.rotation % 180 == 0 else (info.width, info.height)
    return media.even_size(*output_size(height, width, max_side, max_pixels))


def background_flows(previous: np.ndarray, current: np.ndarray, plan: TilePlan) -> list[np.ndarray]:
    """Each background piece's optical flow from the current frame to the previous one.

    Head crops need none: their crop follows the face. The background moves with the
    camera, so its finish leans on where each pixel was, not on the pixel at its place.
    """
    def gray(rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(resize_to(rgb, plan.height, plan.width), cv2.COLOR_RGB2GRAY)

    flow = optical_flow(gray(current), gray(previous), cv2.DISOPTICAL_FLOW_PRESET_FAST)
    flow = cv2.copyMakeBorder(flow, 0, plan.canvas_height - plan.height, 0, plan.canvas_width - plan.width,
                              cv2.BORDER_REPLICATE)
    return [flow[y:y + plan.piece_height, x:x + plan.piece_width] for y, x in plan.origins]


def _finish_job(temporal: TemporalFinish, job: Job, track_ids: list[int], flows: list[np.ndarray] | None) -> Job:
    """Finishes a frame's pieces in order; ``flows`` None: a shot's first frame."""
    if flows is None:
        temporal.reset()
    keys = [("head", track_id) for track_id in track_ids] + [("background", i) for i in range(len(job.background))]
    temporal.keep_only(set(keys))
    heads = np.array([temporal.apply(key, head) for key, head in zip(keys, job.heads)], np.uint8)
    background = np.array([
        temporal.apply(key, piece, None if flows is None else flow)
        for key, piece, flow in zip(keys[len(track_ids):], job.background, flows or [None] * len(job.background))
    ], np.uint8)
    return replace(job, heads=heads.reshape(job.heads.shape), background=background)


def finish_tracked_frame(temporal: TemporalFinish, job: Job, track_ids: list[int], previous: np.ndarray | None,
                         current: np.ndarray) -> Job:
    """Finishes a stylized frame leaning on its own past: heads by track, the background along
    the flow from ``previous`` (None: a shot's first frame, finished as a still)."""
    flows = None if previous is None else background_flows(previous, current, job.plan)
    return _finish_job(temporal, job, track_ids, flows)


async def cartoonize_clip(
    source: str | Path,
    destination: str | Path,
    info: media.VideoInfo,
    output_format: str,
    options: Options,
    stages: FrameStages,
    detector: FaceDetector,
    finish: Finish | None,
    settings: ClipSettings = ClipSettings(),
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> ClipReport:
    """Cartoonizes every frame of ``source`` into ``destination``.

    ``on_progress`` is called after each frame written; an exception it raises (a job
    cancelled) stops the clip, as does cancelling this coroutine. The destination is
    then left incomplete.
    """
    height, width = frame_size(info, options.max_side, settings.max_output_pixels)
    frame_options = replace(options, max_side=None)
    tracker = FaceTracker(detector, settings.tracker)
    exposure = ExposureSmoother(settings.tone)
    temporal = TemporalFinish(finish, settings.hysteresis) if finish else None
    # One thread per ordered step: each keeps its own state and order; the GIL is
    # released by FFmpeg, OpenCV and dlib, so they overlap with each other and the UNet.
    threads = {name: ThreadPoolExecutor(1, thread_name_prefix=f"clip-{name}")
               for name in ("decode", "track", "finish", "encode")}
    loop = asyncio.get_running_loop()
    busy = dict.fromkeys(("decode", "track", "align", "background", "unet", "finish", "compose", "encode"), 0.0)
    clip_start = time.perf_counter()

    def timed_call(name: str, function, *args):
        start = time.perf_counter()
        try:
            return function(*args)
        finally:
            busy[name] += time.perf_counter() - start

    def on(name: str, function, *args):
        return loop.run_in_executor(threads[name], timed_call, name, function, *args)

    async def timed_stage(name: str, coroutine):
        start = time.perf_counter()
        try:
            return await coroutine
        finally:
            busy[name] += time.perf_counter() - start

    decoded = media.frames(source, info.rotation, info.limits)
    writer = await on("encode", media.VideoWriter, destination, source, info, output_format,
                      *((width, height) if info.rotation % 180 == 0 else (height, width)))
    stylized: asyncio.Queue = asyncio.Queue(settings.frames_in_flight)
    composed: asyncio.Queue = asyncio.Queue(settings.frames_in_flight)
    tasks: list[asyncio.Future] = []

    def started(coroutine) -> asyncio.Future:
        task = asyncio.ensure_future(coroutine)
        tasks.append(task)
        return task

    async def read_and_track() -> None:
        while (frame := await on("decode", next, decoded, None)) is not None:
            rgb = resize_to(frame.rgb, height, width)
            tracked, cut = await on("track", tracker.update, rgb, frame.time_s)
            faces = [t.face for t in tracked]
            held = await on("track", exposure.update, rgb, [face.box for face in faces], cut)
            job = started(stages.stylize(rgb, faces, replace(frame_options, exposure=held)))
            await stylized.put((frame.pts, [t.track_id for t in tracked], cut, rgb, job))
        await stylized.put(None)

    async def finish_in_order() -> None:
        previous = None
        while (item := await stylized.get()) is not None:
            pts, track_ids, cut, rgb, job = item
            job = await job
            for stage in ("align", "background", "unet"):
                busy[stage] += job.timings.get(stage, 0.0) / 1000.0
            if temporal is not None:
                job = await on("finish", finish_tracked_frame, temporal, job, track_ids, None if cut else previous, rgb)
            previous = rgb
            await composed.put((pts, started(timed_stage("compose", stages.compose(job)))))
        await composed.put(None)

    async def encode_in_order() -> int:
        written, start = 0, time.perf_counter()
        while (item := await composed.get()) is not None:
            pts, picture = item
            await on("encode", writer.write, media.stored(await picture, info.rotation), pts)
            written += 1
            fps = written / max(time.perf_counter() - start, 1e-6)
            total = max(info.frames, written)
            on_progress(Progress(written, total, fps, (total - written) / fps))
        return written

    try:
        steps = [started(read_and_track()), started(finish_in_order()), started(encode_in_order())]
        written = (await asyncio.gather(*steps))[2]
        await on("encode", writer.close)
        return ClipReport(written, time.perf_counter() - clip_start, busy)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await on("encode", writer.abort)
        raise
    finally:
        await on("decode", decoded.close)
        for executor in threads.values():
            executor.shutdown(wait=False)


class LocalStages:
    """``FrameStages`` in this process: the ``cartoonize`` command's, with no Ray.

    One frame's UNet at a time, on all the torch threads; aligning and composing run
    beside it on other threads.
    """

    def __init__(self, pipeline: Pipeline, style: str | None):
        self.preparer = pipeline.preparer
        self.stylizer = pipeline.stylizer(style)
        self.composer = Composer()
        self._unet = ThreadPoolExecutor(1, thread_name_prefix="unet")

    async def stylize(self, rgb: np.ndarray, faces: list[Face], options: Options) -> Job:
        job = await asyncio.to_thread(self.preparer.prepare_array, rgb, options, faces=faces)
        return await asyncio.get_running_loop().run_in_executor(
            self._unet, stylize_job, job, self.stylizer, False
        )

    async def compose(self, job: Job) -> np.ndarray:
        return await asyncio.to_thread(self.composer.picture, job)
