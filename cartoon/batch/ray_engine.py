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
  of their own that hold a face detector each (docs/BENCHMARKS.md: 1.3x the images/s
  of ``staged``, and of the HTTP mode, on 2 cores).

Planning, naming, the report and the exit codes are ``cartoon.batch.files``' and
``cartoon.batch.command``'s. The plan streams in: a thread of the driver walks the folder
(``files.plan``, a folder at a time) and hands photos over in chunks through a queue to
the dataset's one read task (``Listing``), never more than the ``Ledger``'s bound out at
once, so a run of a million photos starts at once with the driver's memory bounded.
Each output is written by the process that composed it, at the path the HTTP mode uses,
through a temporary file and a rename; a failed photo becomes a row with its error,
never an exception, so one photo never stops the run.

A worker that dies (a crash in a decoder, the OOM killer, a lost node) is not retried
by Ray, which would retry a photo that crashes its worker without end: the call fails,
its block is dropped and its actor restarted. Its photos never come back, so they are
still in the ``Ledger`` when the stream ends: suspects, run again each alone (one photo
per call, no other call on its actor). A suspect that kills its worker a second time
is reported as poison; the others are done as if nothing had happened.
"""

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
from ray.data.datasource import Datasource, ReadTask
from ray.util.queue import Queue
from tqdm import tqdm

from cartoon.batch import videos
from cartoon.model.device import cap_memory, resolve_device
from cartoon.errors import CartoonError, DeviceOutOfMemoryError, TooLargeForDeviceError, WeightsError
from cartoon.batch.files import Location, Planned, Tally, UsageError, plan, record, remove_partials, report_listing, write_atomic
from cartoon.image.pipeline import Composer, Job, Options, PipelineSettings, Preparer, stylize_jobs
from cartoon.image.styles import DEFAULT_STYLES_DIR, StyleRegistry, Stylizer

# Few rows per input block: a block is what a prepare task (or a whole-photo actor
# call) does and what a lost task redoes, and small blocks start the UNet early and
# spread over the cluster's CPUs.
ROWS_PER_BLOCK = 4
NO_RESULT = "no result came back from Ray Data"
POISON = "poison: its worker died while cartoonizing it, twice, the second time with no other photo in flight"
# Rows per hand-over from the planning thread (one call to the queue's actor each).
CHUNK_ROWS = 64
# Rows handed to Ray Data and not back yet, at most (more if the pool needs more to
# stay busy): what bounds the driver's memory, whatever the folder holds.
IN_FLIGHT_ROWS = 4096
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
    return Stylizer.from_style(registry.get(style), device, settings.precision)


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


class Listing(Datasource):
    """The planned photos as the driver's planning thread hands them over, chunk by chunk, through ``queue``.

    One read task, streaming: it turns each chunk into blocks of ``ROWS_PER_BLOCK`` rows
    and ends at ``None``. The listing never sits whole anywhere: the driver plans a folder
    at a time and hands over no more than its ``Ledger`` lets it.
    """

    def __init__(self, queue: Queue):
        self.queue = queue

    def estimate_inmemory_data_size(self) -> None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ReadTask(functools.partial(_blocks, self.queue), metadata)]


def _blocks(queue: Queue):
    while (chunk := queue.get()) is not None:
        for start in range(0, len(chunk), ROWS_PER_BLOCK):
            yield pa.Table.from_pylist(chunk[start:start + ROWS_PER_BLOCK])


class Ledger:
    """The driver's account of the photos handed to Ray Data and not back yet.

    It bounds them (``limit``): the planning thread waits for room, so neither the
    driver nor Ray Data holds more of the listing than that, however large the folder.
    A photo whose outcome never comes back (its block was dropped: its worker died) is
    still here when the run ends: a suspect.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.rows: dict[str, dict] = {}
        self.handed_over = 0
        self.stopped = False
        self.listed = False  # every photo handed over; the end of the listing on its way
        self.feed_error: Exception | None = None  # what stopped the planning thread, if anything did
        self._condition = threading.Condition()

    def full(self) -> bool:
        with self._condition:
            return len(self.rows) >= self.limit

    def wait_for_room(self) -> bool:
        """Waits until a row may be handed over; False once the run stopped."""
        with self._condition:
            self._condition.wait_for(lambda: len(self.rows) < self.limit or self.stopped)
            return not self.stopped

    def hand_over(self, row: dict) -> None:
        with self._condition:
            self.rows[row["relative"]] = row
            self.handed_over += 1

    def back(self, relative: str) -> bool:
        """Whether ``relative`` was out (its first outcome, not a retry's second)."""
        with self._condition:
            returned = self.rows.pop(relative, None) is not None
            self._condition.notify_all()
            return returned

    def take_out(self) -> list[dict]:
        """The photos out and not back, no longer counted against the bound (the suspects of a finished pass)."""
        with self._condition:
            rows, self.rows = list(self.rows.values()), {}
            self._condition.notify_all()
            return rows

    def put_back(self, rows: list[dict]) -> None:
        """``rows`` out again (the suspects' pass), whatever the bound."""
        with self._condition:
            self.rows.update((row["relative"], row) for row in rows)

    def stop(self) -> None:
        with self._condition:
            self.stopped = True
            self._condition.notify_all()


def _feed(planned, source: Location, target: Location, queue: Queue, ledger: Ledger, tally: Tally,
          bar: tqdm) -> None:
    """The planning thread: walks the folder and hands its photos to ``Listing`` as the ``ledger`` allows.

    Clips are failures here (they go through the service). Once the run has stopped
    (``ledger.stop``), it stops too, leaving the photos it had not planned in ``planned``.
    """
    chunk: list[dict] = []
    try:
        for item in planned:
            if videos.is_video(item.relative):
                tally.fail(item.relative, "video clips go through the service's jobs API: run without --engine ray")
                continue
            if ledger.full() and chunk:
                queue.put(chunk)  # what waits for room must be on its way, or nothing ever comes back
                chunk = []
            stopped = not ledger.wait_for_room()
            row = {"relative": str(item.relative), "source": source.join(item.relative),
                   "target": target.join(item.output), "output": str(item.output)}
            ledger.hand_over(row)
            if stopped:
                return  # the run reports the photo with the others it did not finish
            chunk.append(row)
            if len(chunk) == CHUNK_ROWS:
                queue.put(chunk)
                chunk = []
        if chunk:
            queue.put(chunk)
        ledger.listed = True  # before the end is sent: the run must not see the end and not this
        queue.put(None)
        bar.total = ledger.handed_over
        bar.refresh()
    # The queue's actor gone with the cluster: the run fails, and reports the rest.
    except Exception as exc:
        ledger.feed_error = exc


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


def _outcomes(photos: ray.data.Dataset, ledger: Ledger, tally: Tally, bar: tqdm, *args, **kwargs) -> None:
    """Records each photo's first outcome."""
    for outcome in dataset(photos, *args, **kwargs).iter_rows():
        if ledger.back(outcome["relative"]):  # each photo once, whatever was retried
            record(tally, bar, PurePosixPath(outcome["relative"]), outcome["error"] or None)


def run(planned: Iterator[Planned], source: Location, target: Location, options: Options, settings: RaySettings,
        tally: Tally, started: list[float]) -> None:
    """Cartoonizes the ``planned`` photos (``files.plan``) of ``source`` into ``target`` on the connected Ray cluster.

    Planning streams into the run (``_feed``, ``Listing``). A photo whose worker died
    with it (its block dropped) is a suspect: when the stream is done, each suspect runs
    again alone; one that takes its worker down again is reported as poison. Fills
    ``tally`` as photos finish; every planned photo ends done or among its failures,
    unless the run is interrupted. ``started`` receives the start time.
    """
    context = ray.data.DataContext.get_current()
    # The driver's own bar counts photos; Ray Data's per-operator bars would interleave with it.
    context.enable_progress_bars = False
    # A block whose worker died is dropped, not the run: its photos are the suspects.
    context.max_errored_blocks = -1
    settings = fill_cluster(settings, ray.cluster_resources())
    ledger = Ledger(max(IN_FLIGHT_ROWS, 2 * DEFAULT_CALLS_PER_ACTOR * settings.unet_actors * settings.batch_size))
    queue = Queue()
    started.append(time.perf_counter())
    missing, retried = POISON, []
    with tqdm(total=None, unit="img", dynamic_ncols=True) as bar:
        feeder = threading.Thread(target=_feed, args=(planned, source, target, queue, ledger, tally, bar),
                                  name="cartoonize-batch planning", daemon=True)
        feeder.start()
        try:
            while True:
                # The read task holds no CPU: it waits on the queue while the photos use them.
                listing = ray.data.read_datasource(Listing(queue), override_num_blocks=1, num_cpus=0)
                _outcomes(listing, ledger, tally, bar, source, target, options, settings)
                retried += ledger.take_out()
                if ledger.feed_error is not None:
                    raise ledger.feed_error
                if ledger.listed and queue.empty():
                    break
                # The stream ended before the listing did (the read task's worker died):
                # another read task takes up the queue where it stopped.
            if retried:
                bar.write(f"{len(retried)} photos were on workers that died: each again, alone")
                ledger.put_back(retried)
                alone = ray.data.from_items(retried, override_num_blocks=len(retried))
                _outcomes(alone, ledger, tally, bar, source, target, options, settings, alone=True)
        # The run itself failed (the cluster gone): what it did not finish is reported,
        # photo by photo, like any other failure.
        except Exception as exc:
            missing = f"{NO_RESULT}: the run failed: {exc!r:.500}"
        finally:
            ledger.stop()
            feeder.join()
        unfinished = ledger.take_out()
        for row in unfinished:
            record(tally, bar, PurePosixPath(row["relative"]), missing)
        for item in planned:  # what planning had not reached when the run failed
            record(tally, bar, item.relative, missing)
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
