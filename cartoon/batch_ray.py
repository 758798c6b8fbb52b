"""``cartoonize-batch --engine ray``: a folder of photos through Ray Data, on a Ray cluster.

The only module of the core that imports Ray; ``cartoon.folder`` imports it for
``--engine ray`` alone. The stages are the served graph's (``cartoon.pipeline``):

    read + decode + detect + align (CPU tasks)
      -> UNet (an actor pool: a fixed number of actors, each with its num_gpus/num_cpus,
         fed batches of images whose head crops and background pieces form its batches)
      -> compose + encode + write (CPU tasks)

Planning, naming, the report and the exit codes are ``cartoon.folder``'s. Each output is
written by the task that composed it, at the path the HTTP mode uses, through a
temporary file and a rename; a failed photo becomes a row with its error, never an
exception, so one photo never stops the run. Ray Data retries the tasks and restarts
the actors that a lost worker or node took with it; a retried task writes the same
output again, so a retry is harmless.
"""

import functools
import logging
import math
import pickle
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
import ray
import torch
from tqdm import tqdm

from cartoon import folder_video
from cartoon.device import cap_memory, resolve_device
from cartoon.errors import CartoonError, DeviceOutOfMemoryError, TooLargeForDeviceError, WeightsError
from cartoon.folder import Location, Tally, UsageError, plan_location, record, report_ignored, write_atomic
from cartoon.pipeline import Composer, Options, PipelineSettings, Preparer, stylize_jobs
from cartoon.styles import DEFAULT_STYLES_DIR, StyleRegistry, Stylizer

# Few rows per input block: a block is what a prepare task does and what a lost task
# redoes, and small blocks start the UNet early and spread over the cluster's CPUs.
ROWS_PER_BLOCK = 4
NO_RESULT = "no result came back from Ray Data"
# What a UNet actor holds at most on a CPU: 1.4 GB measured at a batch of eight 1024 px
# photos, 1.9 GB for 12 MP ones. Declared so Ray never packs more actors on a node than
# its memory holds; and, differing from the prepare map's resources, it keeps Ray Data
# from fusing that map into the actors (it fuses stages whose resources are equal),
# where photos would be decoded and aligned only as many at once as there are actors.
UNET_ACTOR_MEMORY_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class RaySettings:
    """How the job uses the cluster."""

    unet_actors: int = 1  # UNet actors in the pool
    cpus_per_actor: float = 1.0  # logical CPUs per UNet actor; its torch threads on a CPU
    gpus_per_actor: float = 0.0  # GPUs per UNet actor (fractions share one)
    cpus_per_task: float = 1.0  # logical CPUs per prepare or compose task
    batch_size: int = 4  # images per UNet actor call; their pieces form the UNet batches
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)


@functools.cache
def _preparer(settings: PipelineSettings) -> Preparer:
    """One per worker process: the detector's models load once, not per photo."""
    return Preparer(settings, StyleRegistry.from_directory(DEFAULT_STYLES_DIR))


def _failed(row: dict, error: str) -> dict:
    return {"relative": row["relative"], "target": row["target"], "job": b"", "full_size": b"", "error": error}


def _message(exc: Exception) -> str:
    """A photo's error as the in-process mode words it; any other exception is our bug."""
    if isinstance(exc, CartoonError | DeviceOutOfMemoryError | TooLargeForDeviceError):
        return f"{exc.code}: {exc}"
    if isinstance(exc, OSError):
        return f"io: {exc}"
    return f"internal: {exc!r}"


def prepare(row: dict, filesystem, options: Options, settings: PipelineSettings) -> dict:
    """Reads one photo and runs everything before the UNet; a failure becomes the row's error."""
    try:
        with filesystem.open_input_stream(row["source"]) as stream:
            data = stream.read()
        job, full_size = _preparer(settings).prepare(data, options).split_full_size()
    # Every exception: one photo, whatever is wrong with it, must not stop the others.
    except Exception as exc:
        return _failed(row, _message(exc))
    return {
        "relative": row["relative"], "target": row["target"],
        "job": pickle.dumps(job, protocol=5), "full_size": pickle.dumps(full_size, protocol=5), "error": "",
    }


class UNetStage:
    """A pool actor: one style's generators on the device Ray gave it."""

    def __init__(self, style: str | None, settings: PipelineSettings):
        context = ray.get_runtime_context()
        resources = context.get_assigned_resources()
        # CUDA only on a GPU Ray assigned, as the Cartoonizer does.
        device = resolve_device(settings.device, context.get_accelerator_ids().get("GPU", []))
        if device.type == "cuda":
            # Ray shares a GPU by bookkeeping only; the cap keeps actors sharing one apart.
            cap_memory(device, resources.get("GPU", 0.0))
        else:
            torch.set_num_threads(max(1, math.ceil(resources.get("CPU", 1.0))))
        registry = StyleRegistry.from_directory(DEFAULT_STYLES_DIR)
        self.stylizer = Stylizer.from_style(registry.get(style), device, settings.precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        live = [index for index, error in enumerate(batch["error"]) if not error]
        jobs = [pickle.loads(batch["job"][index]) for index in live]
        errors = list(batch["error"])
        try:
            stylized = stylize_jobs(jobs, self.stylizer)
        except Exception:
            # One photo's trouble (a background too large for the GPU, say) must not fail
            # the others of its batch: each alone, so only its own row fails.
            stylized = []
            for index, job in zip(live, jobs):
                try:
                    stylized += stylize_jobs([job], self.stylizer)
                except Exception as exc:
                    stylized.append(None)
                    errors[index] = _message(exc)
        pickled = list(batch["job"])
        for index, job in zip(live, stylized):
            pickled[index] = b"" if job is None else pickle.dumps(job, protocol=5)
        return {
            "relative": batch["relative"], "target": batch["target"], "full_size": batch["full_size"],
            "job": np.array(pickled, dtype=object), "error": np.array(errors, dtype=object),
        }


def compose(row: dict, filesystem) -> dict:
    """Pastes, encodes and writes one photo; returns what the driver reports."""
    if row["error"]:
        return {"relative": row["relative"], "error": row["error"]}
    try:
        job = pickle.loads(row["job"]).with_full_size(pickle.loads(row["full_size"]))
        write_atomic(filesystem, row["target"], Composer().compose(job).data)
    except Exception as exc:  # as in prepare: one photo never stops the others
        return {"relative": row["relative"], "error": _message(exc)}
    return {"relative": row["relative"], "error": ""}


def dataset(rows: list[dict], source: Location, target: Location, options: Options,
            settings: RaySettings) -> ray.data.Dataset:
    """The whole job as a Ray Data dataset of (relative, error) rows, one per photo."""
    blocks = max(1, math.ceil(len(rows) / ROWS_PER_BLOCK))
    return (
        ray.data.from_items(rows, override_num_blocks=blocks)
        .map(prepare, fn_kwargs={"filesystem": source.filesystem, "options": options,
                                 "settings": settings.pipeline}, num_cpus=settings.cpus_per_task)
        .map_batches(UNetStage, fn_constructor_kwargs={"style": options.style, "settings": settings.pipeline},
                     batch_size=settings.batch_size, batch_format="numpy",
                     compute=ray.data.ActorPoolStrategy(size=settings.unet_actors),
                     num_cpus=settings.cpus_per_actor, num_gpus=settings.gpus_per_actor,
                     memory=UNET_ACTOR_MEMORY_BYTES)
        .map(compose, fn_kwargs={"filesystem": target.filesystem}, num_cpus=settings.cpus_per_task)
    )


def run(source: Location, target: Location, options: Options, settings: RaySettings, overwrite: bool,
        tally: Tally, started: list[float]) -> None:
    """Cartoonizes every photo under ``source`` into ``target`` on the connected Ray cluster.

    Fills ``tally`` as photos finish; every planned photo ends done or among its
    failures, unless the run is interrupted. ``started`` receives the start time.

    Raises:
        UsageError: an unknown style, weights that do not load, no input folder.
    """
    try:
        StyleRegistry.from_directory(DEFAULT_STYLES_DIR).get(options.style)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from exc
    except WeightsError as exc:
        raise UsageError(str(exc)) from exc
    planned, ignored = plan_location(source, target, options.format, overwrite, tally)
    report_ignored(ignored)
    for relative in [relative for relative, _ in planned if folder_video.is_video(relative)]:
        tally.fail(relative, "video clips go through the service's jobs API: run without --engine ray")
    planned = [(relative, output) for relative, output in planned if not folder_video.is_video(relative)]
    rows = [{"relative": str(relative), "source": source.join(relative), "target": target.join(output)}
            for relative, output in planned]
    # The driver's own bar counts photos; Ray Data's per-operator bars would interleave with it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    started.append(time.perf_counter())
    waiting = {row["relative"] for row in rows}
    missing = NO_RESULT
    with tqdm(total=len(rows), unit="img", dynamic_ncols=True) as bar:
        try:
            if rows:
                for outcome in dataset(rows, source, target, options, settings).iter_rows():
                    if outcome["relative"] in waiting:  # each photo once, whatever was retried
                        waiting.discard(outcome["relative"])
                        record(tally, bar, PurePosixPath(outcome["relative"]), outcome["error"] or None)
        # The run itself failed (retries used up, the cluster gone): what it did not
        # finish is reported, photo by photo, like any other failure.
        except Exception as exc:
            missing = f"{NO_RESULT}: the run failed: {exc!r:.500}"
        for relative in sorted(waiting):
            record(tally, bar, PurePosixPath(relative), missing)


def main(args, options: Options, tally: Tally, started: list[float]) -> None:
    """``cartoonize-batch --engine ray``: connects to ``--address`` (or starts a local Ray) and runs."""
    settings = RaySettings(
        unet_actors=args.unet_actors, cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
        cpus_per_task=args.cpus_per_task, batch_size=args.batch_size,
        pipeline=PipelineSettings(tile=args.tile),
    )
    source, target = Location.parse(args.input_dir), Location.parse(args.output)
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
        run(source, target, options, settings, args.overwrite, tally, started)
    finally:
        ray.shutdown()
