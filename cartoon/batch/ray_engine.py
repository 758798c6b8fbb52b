"""``cartoonize-batch --engine ray``: a folder of photos through Ray Data, on a Ray cluster.

The only module of the core that imports Ray; ``cartoon.batch.command`` imports it for
``--engine ray`` alone. The stages are the served graph's (``cartoon.image.pipeline``), laid
out one of two ways:

- ``staged``, for UNet actors that hold GPUs::

    read + decode + detect + align (CPU tasks)
      -> UNet (an actor pool: a fixed number of actors, each with its num_gpus/num_cpus,
         fed batches of images whose head crops and background pieces form its batches)
      -> compose + encode + write (CPU tasks)

  The GPU's actor does nothing but the UNet, fed by every CPU of the cluster.
- ``whole``, for UNet actors on CPUs: one actor pool, each actor taking a batch of
  photos from file to file (read, prepare, the UNet on their pieces, compose, write).
  On a CPU every stage runs on the same cores, so handing a job to another process buys
  no parallelism and costs a pickle and an object-store hop each way, and task workers
  of their own that hold a face detector each (docs/FOLDERS.md: 1.3x the images/s
  of ``staged``, and of the HTTP mode, on 2 cores).

Planning, naming, the report and the exit codes are ``cartoon.batch.files``' and
``cartoon.batch.command``'s. Each output is written by the process that composed it, at
the path the HTTP mode uses, through a temporary file and a rename; a failed photo
becomes a row with its error, never an exception, so one photo never stops the run.

A worker that dies (a crash in a decoder, the OOM killer, a lost node) is not retried
by Ray, which would retry a photo that crashes its worker without end: the call fails,
its block is dropped and its actor restarted. Its photos never come back, so they are
still waiting when the others are done: suspects, run again each alone (one photo
per call, no other call on its actor). A suspect that kills its worker a second time
is reported as poison; the others are done as if nothing had happened.
"""

import asyncio
import collections
import functools
import logging
import math
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import cv2
import numpy as np
import pyarrow as pa
import ray
import torch
from ray.data.block import BlockMetadata
from tqdm import tqdm

from cartoon.batch import videos
from cartoon.model.device import cap_memory, resolve_device
from cartoon.errors import CartoonError, DeviceOutOfMemoryError, TooLargeForDeviceError, WeightsError
from cartoon.batch.files import Location, Planned, Tally, UsageError, plan, record, remove_partials, report_listing, write_atomic
from cartoon.image.pipeline import Composer, Job, Options, PipelineSettings, Preparer, stylize_jobs
from cartoon.image.styles import DEFAULT_STYLES_DIR, StyleRegistry, Stylizer

# Photos planned and handed to Ray Data but not finished, at most (``RaySettings.in_flight``):
# the driver plans only this far ahead, so its memory is the same for ten photos or a
# million, and the first photo starts as soon as the walk has found it.
IN_FLIGHT = 4096
# A walk held at its bound this long with no photo finishing raises the bound (``Feeder``).
STALL_S = 60.0
# Planned photos go to the feed this many at a time: one actor call per chunk.
FEED_CHUNK = 64
# Tasks reading from the feed: a feed's read is a queue's pop, so two keep any pool busy.
FEED_READERS = 2
# Few rows per input block: a block is what a prepare task (or a whole-photo actor
# call) does and what a lost task redoes, and small blocks start the UNet early and
# spread over the cluster's CPUs.
ROWS_PER_BLOCK = 4
NO_RESULT = "no result came back from Ray Data"
POISON = "poison: its worker died while cartoonizing it, twice, the second time with no other photo in flight"
# Calls Ray Data sends each pool actor at once (its default: twice the actor's one
# running call): all of them fail, and their photos become suspects, when it dies.
DEFAULT_CALLS_PER_ACTOR = 2
# What a UNet actor holds at most on a CPU: 1.4 GB measured at a batch of eight 1024 px
# photos, 1.9 GB for 12 MP ones. Declared so Ray never packs more actors on a node than
# its memory holds; and, differing from the prepare map's resources, it keeps Ray Data
# from fusing that map into the actors (it fuses stages whose resources are equal),
# where photos would be decoded and aligned only as many at once as there are actors.
UNET_ACTOR_MEMORY_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class RaySettings:
    """How the job uses the cluster."""

    unet_actors: int | None = None  # actors in the pool; None: as many as the cluster holds (``fill_cluster``)
    cpus_per_actor: float = 1.0  # logical CPUs per UNet actor; its torch threads on a CPU
    gpus_per_actor: float = 0.0  # GPUs per UNet actor (fractions share one)
    cpus_per_task: float = 1.0  # logical CPUs per prepare or compose task (staged)
    batch_size: int = 4  # images per UNet actor call; their pieces form the UNet batches
    layout: str = "auto"  # cartoon.batch.command.RAY_LAYOUTS; auto: staged when the actors hold GPUs, else whole
    in_flight: int = IN_FLIGHT  # photos planned ahead of those finished, at most
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)

    @property
    def chosen_layout(self) -> str:
        if self.layout != "auto":
            return self.layout
        return "staged" if self.gpus_per_actor > 0 else "whole"


def fill_cluster(settings: RaySettings, resources: dict[str, float]) -> RaySettings:
    """``settings`` with the pool's size set, when it was not, to what ``resources`` hold.

    As many actors as the cluster's GPUs (actors with GPUs), or its CPUs and memory
    (whole-photo actors on CPUs) give room for; a staged pool on CPUs gets one, since
    its tasks need the other CPUs. At least one: Ray Data waits for the resources of a
    pool larger than the cluster (an autoscaling one adds nodes).
    """
    if settings.unet_actors is not None:
        return settings
    if settings.gpus_per_actor > 0:
        fits = resources.get("GPU", 0.0) / settings.gpus_per_actor
    elif settings.chosen_layout == "whole":
        by_cpus = resources.get("CPU", 0.0) / settings.cpus_per_actor if settings.cpus_per_actor else math.inf
        fits = min(by_cpus, resources.get("memory", 0.0) / UNET_ACTOR_MEMORY_BYTES)
    else:
        fits = 1
    return replace(settings, unet_actors=max(1, math.floor(fits)))


@functools.cache
def _preparer(settings: PipelineSettings) -> Preparer:
    """One per worker process: the detector's models load once, not per photo."""
    return Preparer(settings, StyleRegistry.from_directory(DEFAULT_STYLES_DIR))


def _stylizer(style: str | None, settings: PipelineSettings) -> Stylizer:
    """One style's generators on the device Ray gave this actor, as the Cartoonizer loads them."""
    context = ray.get_runtime_context()
    resources = context.get_assigned_resources()
    # CUDA only on a GPU Ray assigned, as the Cartoonizer does.
    device = resolve_device(settings.device, context.get_accelerator_ids().get("GPU", []))
    if device.type == "cuda":
        # Ray shares a GPU by bookkeeping only; the cap keeps actors sharing one apart.
        cap_memory(device, resources.get("GPU", 0.0))
    else:
        threads = max(1, math.ceil(resources.get("CPU", 1.0)))
        torch.set_num_threads(threads)
        # OpenCV's resizes and warps would otherwise spread over every core of the
        # node, which the other actors are using.
        cv2.setNumThreads(threads)
    registry = StyleRegistry.from_directory(DEFAULT_STYLES_DIR)
    return Stylizer.from_style(
        registry.get(style), device, settings.precision, settings.background_scale, tiled=bool(settings.tile)
    )


def _failed(row: dict, error: str) -> dict:
    return {"relative": row["relative"], "target": row["target"], "job": b"", "full_size": b"", "error": error}


def _message(exc: Exception) -> str:
    """A photo's error as the in-process mode words it; any other exception is our bug."""
    if isinstance(exc, CartoonError | DeviceOutOfMemoryError | TooLargeForDeviceError):
        return f"{exc.code}: {exc}"
    if isinstance(exc, OSError):
        return f"io: {exc}"
    return f"internal: {exc!r}"


def _read_and_prepare(source: str, filesystem, options: Options, preparer: Preparer) -> Job:
    with filesystem.open_input_stream(source) as stream:
        data = stream.read()
    return preparer.prepare(data, options)


def _stylized(jobs: list[Job], stylizer: Stylizer) -> list[Job | str]:
    """The jobs stylized together, each as a job or, where it failed, its error message."""
    try:
        return stylize_jobs(jobs, stylizer)
    except Exception:
        # One photo's trouble (a background too large for the GPU, say) must not fail
        # the others of its batch: each alone, so only its own row fails.
        outcomes: list[Job | str] = []
        for job in jobs:
            try:
                outcomes += stylize_jobs([job], stylizer)
            except Exception as exc:
                outcomes.append(_message(exc))
        return outcomes


def _compose_and_write(job: Job, target: str, filesystem) -> None:
    write_atomic(filesystem, target, Composer().compose(job).data)


def prepare(row: dict, filesystem, options: Options, settings: PipelineSettings) -> dict:
    """Staged: reads one photo and runs everything before the UNet; a failure becomes the row's error."""
    try:
        job, full_size = _read_and_prepare(row["source"], filesystem, options, _preparer(settings)).split_full_size()
    # Every exception: one photo, whatever is wrong with it, must not stop the others.
    except Exception as exc:
        return _failed(row, _message(exc))
    return {
        "relative": row["relative"], "target": row["target"],
        "job": pickle.dumps(job, protocol=5), "full_size": pickle.dumps(full_size, protocol=5), "error": "",
    }


class UNetStage:
    """Staged: a pool actor running one style's generators on the device Ray gave it."""

    def __init__(self, style: str | None, settings: PipelineSettings):
        self.stylizer = _stylizer(style, settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        live = [index for index, error in enumerate(batch["error"]) if not error]
        jobs = [pickle.loads(batch["job"][index]) for index in live]
        errors, pickled = list(batch["error"]), list(batch["job"])
        for index, outcome in zip(live, _stylized(jobs, self.stylizer)):
            if isinstance(outcome, str):
                errors[index], pickled[index] = outcome, b""
            else:
                pickled[index] = pickle.dumps(outcome, protocol=5)
        return {
            "relative": batch["relative"], "target": batch["target"], "full_size": batch["full_size"],
            "job": np.array(pickled, dtype=object), "error": np.array(errors, dtype=object),
        }


def compose(row: dict, filesystem) -> dict:
    """Staged: pastes, encodes and writes one photo; returns what the driver reports."""
    if row["error"]:
        return {"relative": row["relative"], "error": row["error"]}
    try:
        job = pickle.loads(row["job"]).with_full_size(pickle.loads(row["full_size"]))
        _compose_and_write(job, row["target"], filesystem)
    except Exception as exc:  # as in prepare: one photo never stops the others
        return {"relative": row["relative"], "error": _message(exc)}
    return {"relative": row["relative"], "error": ""}


class PhotoStage:
    """Whole: a pool actor taking a batch of photos from their files to their outputs."""

    def __init__(self, options: Options, settings: PipelineSettings, source, target):
        self.stylizer = _stylizer(options.style, settings)
        self.preparer = _preparer(settings)
        self.options, self.source, self.target = options, source, target

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = [""] * len(batch["relative"])
        jobs: dict[int, Job] = {}
        for index, source in enumerate(batch["source"]):
            try:
                jobs[index] = _read_and_prepare(source, self.source, self.options, self.preparer)
            except Exception as exc:  # as in prepare: one photo never stops the others
                errors[index] = _message(exc)
        for index, outcome in zip(jobs, _stylized(list(jobs.values()), self.stylizer)):
            if isinstance(outcome, str):
                errors[index] = outcome
                continue
            try:
                _compose_and_write(outcome, batch["target"][index], self.target)
            except Exception as exc:
                errors[index] = _message(exc)
        return {"relative": batch["relative"], "error": np.array(errors, dtype=object)}


@ray.remote(num_cpus=0)
class PlanFeed:
    """The planned photos between the driver's walk and the read tasks of the dataset.

    The driver puts chunks of rows as its walk finds them, then ``end``; each read task
    takes chunks until the feed is empty and ended. An async actor: a ``take`` waits for
    the next chunk without holding up the ``put`` that brings it.
    """

    def __init__(self):
        self.chunks: collections.deque[list[dict]] = collections.deque()
        self.ended = False
        self.changed = asyncio.Condition()

    async def put(self, chunk: list[dict]) -> None:
        async with self.changed:
            self.chunks.append(chunk)
            self.changed.notify_all()

    async def end(self) -> None:
        async with self.changed:
            self.ended = True
            self.changed.notify_all()

    async def take(self) -> list[dict] | None:
        """The next chunk, or None once the feed is empty and ended."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.chunks or self.ended)
            return self.chunks.popleft() if self.chunks else None


class FeedSource(ray.data.Datasource):
    """Rows read from a ``PlanFeed``: ``FEED_READERS`` tasks, each taking chunks until the feed ends.

    The read tasks reserve no CPU: they only wait on the feed, and one holding a CPU that
    the pool's actors need would wait for rows those actors never take (the streaming
    read that deadlocked before this one).
    """

    def __init__(self, feed):
        self.feed = feed

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: ray.data.DataContext | None = None) -> list[ray.data.ReadTask]:
        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ray.data.ReadTask(functools.partial(_read_feed, self.feed), metadata,
                                  per_task_row_limit=per_task_row_limit) for _ in range(FEED_READERS)]


def _read_feed(feed) -> Iterator[pa.Table]:
    while (chunk := ray.get(feed.take.remote())) is not None:
        for start in range(0, len(chunk), ROWS_PER_BLOCK):
            yield pa.Table.from_pylist(chunk[start:start + ROWS_PER_BLOCK])


class Feeder:
    """Walks the plan on a thread of the driver and feeds its photos, ``in_flight`` at most ahead.

    ``waiting`` (relative path -> row) holds the photos fed and not yet finished; the
    driver takes each out as it finishes (``finished``), which lets the walk go on.
    """

    def __init__(self, planned: Iterator[Planned], source: Location, target: Location, tally: Tally,
                 in_flight: int, bar: tqdm):
        self.planned, self.source, self.target, self.tally, self.bar = planned, source, target, tally, bar
        self.in_flight = self.bound = in_flight
        self.feed = PlanFeed.remote()
        self.waiting: dict[str, dict] = {}
        self.room = threading.Condition()
        self.stopped = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._walk, name="cartoonize-batch-plan", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finished(self, relative: str) -> bool:
        """Takes a finished photo out of ``waiting``; whether it was there (each counts once)."""
        with self.room:
            row = self.waiting.pop(relative, None)
            self.room.notify()
        return row is not None

    def _row(self, item: Planned) -> dict | None:
        if videos.is_video(item.relative):
            self.tally.fail(item.relative, "video clips go through the service's jobs API: run without --engine ray")
            return None
        return {"relative": str(item.relative), "source": self.source.join(item.relative),
                "target": self.target.join(item.output), "output": str(item.output)}

    def _put(self, chunk: list[dict]) -> None:
        ray.get(self.feed.put.remote(chunk))
        self.bar.total += len(chunk)
        self.bar.refresh()

    def _walk(self) -> None:
        chunk: list[dict] = []
        try:
            for item in self.planned:
                if (row := self._row(item)) is None:
                    continue
                with self.room:
                    while not self.stopped and len(self.waiting) >= self.bound:
                        if not self.room.wait(timeout=STALL_S):
                            # Nothing finished for that long: the photos of a dropped block
                            # stay in ``waiting`` until the end (suspects), and a bound full
                            # of them would stop the walk for good.
                            self.bound += self.in_flight
                    if self.stopped:
                        return
                    self.waiting[row["relative"]] = row
                chunk.append(row)
                # Sent when full, or when no more may be planned until some finish.
                if len(chunk) == FEED_CHUNK or len(self.waiting) >= self.bound:
                    self._put(chunk)
                    chunk = []
            if chunk:
                self._put(chunk)
        # Whatever stops the walk (a store that stops answering, the cluster gone) is
        # raised by ``join``, once the photos fed are done.
        except BaseException as exc:
            self.error = exc
        finally:
            self.feed.end.remote()

    def join(self) -> None:
        """Waits for the walk's end; raises what stopped it."""
        self.thread.join()
        if self.error is not None:
            raise self.error

    def stop(self) -> list[dict]:
        """Ends the walk (the run failed); the photos fed and not finished, then those never fed."""
        with self.room:
            self.stopped = True
            self.room.notify()
        self.thread.join()
        rows = list(self.waiting.values())
        for item in self.planned:  # the walk's thread is gone: the rest of the plan is ours
            if (row := self._row(item)) is not None:
                rows.append(row)
                self.bar.total += 1
        return rows


def _pool(settings: RaySettings, alone: bool) -> dict:
    """The UNet actor pool's map_batches arguments.

    Nothing is retried by Ray: a call whose actor died fails at once (``max_task_retries``
    0) and its block is dropped (``max_errored_blocks``, see ``run``); the actor itself is
    restarted. ``alone``: one photo per call and no other call queued on its actor, so a
    death convicts that photo and nothing else.
    """
    in_flight = 1 if alone else DEFAULT_CALLS_PER_ACTOR
    return {"compute": ray.data.ActorPoolStrategy(size=settings.unet_actors, max_tasks_in_flight_per_actor=in_flight),
            "batch_size": 1 if alone else settings.batch_size, "batch_format": "numpy",
            "num_cpus": settings.cpus_per_actor, "num_gpus": settings.gpus_per_actor,
            "memory": UNET_ACTOR_MEMORY_BYTES, "max_restarts": -1, "max_task_retries": 0}


def dataset(photos: ray.data.Dataset, source: Location, target: Location, options: Options,
            settings: RaySettings, alone: bool = False) -> ray.data.Dataset:
    """The whole job on ``photos`` (rows of relative, source and target paths), as (relative, error) rows.

    ``settings.unet_actors`` must be set (``fill_cluster``). ``alone``: each photo in a
    call of its own (``_pool``).
    """
    pool = _pool(settings, alone)
    if settings.chosen_layout == "whole":
        return photos.map_batches(PhotoStage, fn_constructor_kwargs={
            "options": options, "settings": settings.pipeline, "source": source.filesystem,
            "target": target.filesystem}, **pool)
    task = {"num_cpus": settings.cpus_per_task, "max_retries": 0}
    return (
        photos.map(prepare, fn_kwargs={"filesystem": source.filesystem, "options": options,
                                       "settings": settings.pipeline}, **task)
        .map_batches(UNetStage, fn_constructor_kwargs={"style": options.style, "settings": settings.pipeline},
                     **pool)
        .map(compose, fn_kwargs={"filesystem": target.filesystem}, **task)
    )


def _outcomes(photos: ray.data.Dataset, finished, tally: Tally, bar: tqdm, *args, **kwargs) -> None:
    """Records each photo's first outcome; ``finished(relative)`` says whether it is the first."""
    for outcome in dataset(photos, *args, **kwargs).iter_rows():
        if finished(outcome["relative"]):  # each photo once, whatever was retried
            record(tally, bar, PurePosixPath(outcome["relative"]), outcome["error"] or None)


def run(planned: Iterator[Planned], source: Location, target: Location, options: Options, settings: RaySettings,
        tally: Tally, started: list[float]) -> None:
    """Cartoonizes the ``planned`` photos (``files.plan``) of ``source`` into ``target`` on the connected Ray cluster.

    The plan is walked on a thread while photos run: the dataset reads the photos from
    a feed (``Feeder``) that the walk fills, ``settings.in_flight`` photos ahead at most,
    so the first photo starts as soon as it is found and the driver's memory does not
    grow with the folder. A photo whose worker died with it (its block dropped) is a
    suspect: when the others are done, each suspect runs again alone; one that takes its
    worker down again is reported as poison. Fills ``tally`` as photos finish; every
    planned photo ends done or among its failures, unless the run is interrupted.
    ``started`` receives the start time.
    """
    context = ray.data.DataContext.get_current()
    # The driver's own bar counts photos; Ray Data's per-operator bars would interleave with it.
    context.enable_progress_bars = False
    # A block whose worker died is dropped, not the run: its photos are the suspects.
    context.max_errored_blocks = -1
    # Each block leaves its read task as soon as it is made. Ray Data's block shaping holds
    # a task's output until it fills a block of target_max_block_size (128 MiB; None holds
    # it to the task's end): those photos never finish, so the walk gets no room and the
    # feed never ends (the deadlock of the streaming read before this one). At 1 byte every
    # block is full at once; the pool's batch_size puts rows back into batches.
    context.target_max_block_size = 1
    started.append(time.perf_counter())
    missing, retried = POISON, []
    with tqdm(total=0, unit="img", dynamic_ncols=True) as bar:
        feeder = Feeder(planned, source, target, tally, settings.in_flight, bar)
        try:
            settings = fill_cluster(settings, ray.cluster_resources())
            feeder.start()
            photos = ray.data.read_datasource(FeedSource(feeder.feed), override_num_blocks=FEED_READERS,
                                              ray_remote_args={"num_cpus": 0})
            _outcomes(photos, feeder.finished, tally, bar, source, target, options, settings)
            feeder.join()
            retried = list(feeder.waiting.values())
            if retried:
                bar.write(f"{len(retried)} photos were on workers that died: each again, alone")
                alone = ray.data.from_items(retried, override_num_blocks=len(retried))
                _outcomes(alone, feeder.finished, tally, bar, source, target, options, settings, alone=True)
        # The run itself failed (the cluster gone, the input store gone): what it did not
        # finish is reported, photo by photo, like any other failure.
        except Exception as exc:
            missing = f"{NO_RESULT}: the run failed: {exc!r:.500}"
        unfinished = feeder.stop()
        for row in unfinished:
            record(tally, bar, PurePosixPath(row["relative"]), missing)
    report_listing(tally)
    _tidy_unfinished_writes(target, [PurePosixPath(row["output"]) for row in retried + unfinished])


def _tidy_unfinished_writes(target: Location, outputs: list[PurePosixPath]) -> None:
    try:
        for partial in remove_partials(target, outputs):
            print(f"removed {partial}: a lost worker's unfinished write", file=sys.stderr)
    except OSError as exc:  # every photo is counted already; only the tidying failed
        print(f"cartoonize-batch: could not remove unfinished writes: {exc}", file=sys.stderr)


def main(args, options: Options, tally: Tally, started: list[float]) -> None:
    """``cartoonize-batch --engine ray``: connects to ``--address`` (or starts a local Ray) and runs."""
    settings = RaySettings(
        unet_actors=args.unet_actors, cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
        cpus_per_task=args.cpus_per_task, batch_size=args.batch_size, layout=args.layout,
        pipeline=PipelineSettings(tile=args.tile),
    )
    source, target = Location.parse(args.input_dir), Location.parse(args.output)
    # What would fail every photo fails before Ray starts.
    try:
        StyleRegistry.from_directory(DEFAULT_STYLES_DIR).get(options.style)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from exc
    except WeightsError as exc:
        raise UsageError(str(exc)) from exc
    planned = plan(source, target, options.format, args.overwrite, tally)
    # Without --address a Ray of its own ("local"), never one that happens to run on this
    # machine, and without a dashboard; a cluster keeps its own.
    local = {} if args.address else {"include_dashboard": False}
    try:
        ray.init(address=args.address or "local", log_to_driver=False, logging_level=logging.WARNING, **local)
    # No cluster at the address, or a local Ray that did not come up (Ray raises a bare
    # Exception when its node times out starting): nothing can run, as with no service.
    except Exception as exc:
        where = f"at {args.address}" if args.address else "of its own on this machine"
        raise UsageError(f"no Ray {where}: {exc}") from exc
    try:
        run(planned, source, target, options, settings, tally, started)
    finally:
        ray.shutdown()
