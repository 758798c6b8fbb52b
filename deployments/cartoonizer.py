"""Cartoonizer: the UNet, batched across every concurrent request's pieces."""

import asyncio
import itertools
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import ray
import torch
from ray import serve

from cartoon.image.capacity import seconds_per_image, typical_pieces
from cartoon.model.device import cap_memory, resolve_device
from cartoon.model.inference import ImagesInFlight, choose_mode, forward_threads
from cartoon.image.pipeline import Job
from cartoon.image.styles import StyleRegistry, Stylizer
from deployments import deadlines, metrics
from deployments.batching import BatchWaitTuner, LaunchCounter
from deployments.priority import lower_priority
from deployments.settings import AppArgs, BatchingConfig
from deployments.simulated import SimulatedStylizer

_logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class _BatchRecord:
    """What one piece learns about the batch it rode in."""

    batch_id: int
    size: int
    milliseconds: float


@serve.deployment(
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=16,
    user_config=BatchingConfig().model_dump(),
)
class Cartoonizer:
    """Stylizes head crops and background pieces.

    Each request's pieces enter a batch queue one by one, heads and background pieces
    in queues of their own, so a batch holds pieces of every request in flight on this
    replica and of one kind. Serve splits batches by multiplexed model id, so a batch
    never mixes styles; inside a batch, pieces are grouped by shape (the CPU config's
    whole backgrounds differ), since one forward pass needs one tensor shape. One
    forward runs at a time, on one thread, whichever queue its batch came from.
    """

    def __init__(self, args: AppArgs, registry: StyleRegistry):
        lower_priority(args.stage_niceness)
        # Counted machine-wide: the replicas on one machine share its cores.
        self.images_in_flight = ImagesInFlight()
        self.registry = registry
        context = ray.get_runtime_context()
        resources = context.get_assigned_resources()
        # CUDA only on a GPU Ray assigned: "auto" on a GPU host must not take a GPU
        # that the scheduler may have given to another replica.
        self.device = resolve_device(args.device, context.get_accelerator_ids().get("GPU", []))
        self.precision = args.precision
        self.max_threads = 1
        if self.device.type == "cuda":
            # Ray shares the GPU by bookkeeping only; the cap keeps replicas apart.
            cap_memory(self.device, resources.get("GPU", 0.0), args.gpu_memory_fraction)
        else:
            self.max_threads = args.cpu_threads or max(1, math.ceil(resources.get("CPU", 1.0)))
        simulated = SimulatedStylizer(**args.simulated_forward.model_dump()) if args.simulated_forward else None
        self.mode = simulated.mode if simulated else choose_mode(self.device, self.precision)
        _logger.info("UNet inference: %s, up to %d CPU threads per forward", self.mode.describe(), self.max_threads)
        # One forward at a time: the head and background queues share the model.
        self._forward_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unet")
        self._batch_ids = itertools.count()
        self._tokens = itertools.count()
        self.launches = LaunchCounter()
        self.reconfigure(BatchingConfig().model_dump())  # Serve then applies the user_config

        def build(style: str) -> Stylizer | SimulatedStylizer:
            return simulated or Stylizer.from_style(
                self.registry.get(style), self.device, self.precision, args.background_scale, tiled=bool(args.tile)
            )

        # The default style is loaded and timed before the replica reports itself up, so
        # a running replica is one whose model really ran, and the Ingress admits a first
        # burst by what that forward cost (cartoon.image.capacity).
        started = {self.registry.default: build(self.registry.default)}
        # As loaded: a style may fall back from bf16, and the background scale follows the precision.
        self.mode = started[self.registry.default].mode
        _logger.info("default style loaded: %s", self.mode.describe())
        self.seconds_per_image = seconds_per_image(
            started[self.registry.default].run,
            typical_pieces(args.process_side, args.tile, args.halo),
            time.thread_time if self.device.type == "cpu" and not simulated else time.perf_counter,
        )
        _logger.info("a typical image costs the UNet %.3f s of one core", self.seconds_per_image)

        async def load(style: str) -> Stylizer | SimulatedStylizer:
            if style in started:
                return started.pop(style)
            return await asyncio.to_thread(build, style)

        # Wrapped here rather than decorated, so the LRU size can come from the config.
        self._load_style = serve.multiplexed(max_num_models_per_replica=args.styles_per_replica)(load)

    def reconfigure(self, config: dict) -> None:
        self.batching = BatchingConfig(**config)
        self.tuner = BatchWaitTuner(
            self.batching.max_batch_size,
            self.batching.batch_wait_timeout_s,
            self.batching.adaptive_batch_wait,
            self.batching.max_batch_wait_s,
        )
        for queue in (self._stylize_heads, self._stylize_backgrounds):
            queue.set_max_batch_size(self.batching.max_batch_size)
        self._set_batch_wait(self.batching.batch_wait_timeout_s)

    def _set_batch_wait(self, wait_s: float) -> None:
        self.batch_wait_s = wait_s
        for queue in (self._stylize_heads, self._stylize_backgrounds):
            queue.set_batch_wait_timeout_s(wait_s)

    def _forward(
        self, stylizer, kind: str, batch: np.ndarray, tokens: list[int], finished: list[bool]
    ) -> tuple[np.ndarray, float]:
        """One forward pass on the model thread; returns the output and its seconds."""
        self.launches.launched(kind, tokens, self.batching.max_batch_size)
        if self.device.type == "cpu":
            torch.set_num_threads(forward_threads(self.max_threads, self.images_in_flight.total()))
        start = time.perf_counter()
        output = stylizer.run(batch, kind, finished)
        return output, time.perf_counter() - start

    async def _run_batch(
        self, kind: str, pieces: list[tuple[int, np.ndarray, bool]]
    ) -> list[tuple[np.ndarray, _BatchRecord]]:
        stylizer = await self._load_style(serve.get_multiplexed_model_id() or self.registry.default)
        groups: dict[tuple, list[int]] = {}
        for index, (_, array, _) in enumerate(pieces):
            groups.setdefault(array.shape, []).append(index)
        results: list = [None] * len(pieces)
        loop = asyncio.get_running_loop()
        for shape, indices in groups.items():
            batch = np.stack([pieces[i][1] for i in indices])  # (B, H, W, 3) uint8
            tokens = [pieces[i][0] for i in indices]
            finished = [pieces[i][2] for i in indices]
            # On the model thread, so the event loop keeps forming the next batches meanwhile.
            outputs, seconds = await loop.run_in_executor(
                self._forward_thread, self._forward, stylizer, kind, batch, tokens, finished
            )
            self.tuner.observe((kind,) + shape, len(indices), seconds)
            record = _BatchRecord(next(self._batch_ids), len(indices), seconds * 1000.0)
            metrics.record_unet_batch(kind, len(indices))
            for i, output in zip(indices, outputs):
                results[i] = (output, record)
        self._retune()
        return results

    def _retune(self) -> None:
        wait_s = self.tuner.wait_s()
        if abs(wait_s - self.batch_wait_s) > 0.1 * wait_s + 1e-4:  # not on every jitter
            self._set_batch_wait(wait_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _stylize_heads(
        self, pieces: list[tuple[int, np.ndarray, bool]]
    ) -> list[tuple[np.ndarray, _BatchRecord]]:
        return await self._run_batch("head", pieces)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _stylize_backgrounds(
        self, pieces: list[tuple[int, np.ndarray, bool]]
    ) -> list[tuple[np.ndarray, _BatchRecord]]:
        return await self._run_batch("background", pieces)

    async def stylize(self, job: Job, finish: bool = True) -> Job:
        """Returns the job with its head crops and background pieces stylized.

        Without ``finish`` the style's finish is left out: a video's frames share the
        batches of every request and are finished in order by their job
        (``cartoon.image.finish.TemporalFinish``). Skips the job (``DeadlineExceeded``) when
        its deadline passed while it queued.
        """
        deadlines.check(job.deadline, "the Cartoonizer")
        job.record_wait("cartoonizer")
        start = time.perf_counter()
        stylizer = await self._load_style(serve.get_multiplexed_model_id() or self.registry.default)
        pieces = [("head", crop) for crop in job.heads] + [("background", piece) for piece in job.background]
        tokens = [next(self._tokens) for _ in pieces]
        for token, (kind, _) in zip(tokens, pieces):
            self.launches.arrived(kind, [token])
        queues = {"head": self._stylize_heads, "background": self._stylize_backgrounds}
        self.images_in_flight.add(1)
        try:
            outputs = await asyncio.gather(
                *(queues[kind]((token, piece, finish)) for token, (kind, piece) in zip(tokens, pieces))
            )
        finally:
            self.images_in_flight.add(-1)
            for token, (kind, _) in zip(tokens, pieces):
                self.launches.forget(kind, [token])
        batches = {record.batch_id: record for _, record in outputs}
        timings = dict(job.timings)
        timings["unet"] = (time.perf_counter() - start) * 1000.0
        timings["unet_compute"] = sum(record.milliseconds for record in batches.values())
        metrics.record_stages(timings, metrics.CARTOONIZER_STAGES)
        head_count = len(job.heads)
        return replace(
            job,
            heads=np.array([out for out, _ in outputs[:head_count]], np.uint8).reshape(job.heads.shape),
            background=np.array([out for out, _ in outputs[head_count:]], np.uint8),
            timings=timings,
            batch_sizes=job.batch_sizes + [record.size for record in batches.values()],
            handed_over_at=time.time(),
            paste_mask=stylizer.paste_mask,
        )

    def __del__(self):
        # Serve calls this on a graceful shutdown; a killed replica's count file is
        # skipped and removed by the others (ImagesInFlight).
        self.images_in_flight.close()

    def inference(self) -> dict:
        """How the UNet runs here (``InferenceMode.describe``) and what a typical image costs it.

        ``seconds_per_image`` was measured by a forward at start-up (``cartoon.image.capacity``);
        the Ingress admits by it until it has measured its own throughput.
        """
        return {
            **self.mode.describe(),
            "max_cpu_threads": self.max_threads,
            "seconds_per_image": round(self.seconds_per_image, 4),
        }

    def batching_stats(self) -> dict:
        """This replica's launches so far and its current batch wait (for the benchmarks)."""
        cost = {
            "x".join(map(str, shape)): vars(fitted)
            for shape in self.tuner.shapes()
            if (fitted := self.tuner.cost(shape)) is not None
        }
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "batch_wait_s": self.batch_wait_s,
            "max_batch_size": self.batching.max_batch_size,
            "forward_cost": cost,
            **self.launches.snapshot(),
        }

    def check_health(self) -> None:
        """Serve's per-replica probe, called beside the request queue: the weights are still there.

        Light on purpose (a few stat calls): it runs every few seconds on every replica,
        and a replica whose weights vanished (an unmounted volume) cannot load a style.
        """
        default = self.registry.get(None)
        for path in (default.head, default.background):
            if not path.is_file():
                raise RuntimeError(f"weights file {path} is gone")
