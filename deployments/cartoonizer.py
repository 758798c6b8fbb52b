"""Cartoonizer: the UNet, batched across every concurrent request's pieces."""

import asyncio
import itertools
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import ray
import torch
from ray import serve

from cartoon.pipeline import Job
from cartoon.styles import StyleRegistry, Stylizer, resolve_device
from deployments import deadlines, metrics
from deployments.settings import AppArgs, BatchingConfig

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

    Each request's pieces enter ``_stylize_pieces`` one by one, so a batch holds
    pieces of every request in flight on this replica. Serve splits batches by
    multiplexed model id, so a batch never mixes styles; inside a batch, pieces are
    grouped by kind and shape, since one forward pass needs one tensor shape.
    """

    def __init__(self, args: AppArgs):
        self.registry = StyleRegistry.from_directory(args.styles_dir)
        self.device = resolve_device(args.device)
        resources = ray.get_runtime_context().get_assigned_resources()
        if self.device.type == "cuda":
            fraction = args.gpu_memory_fraction or min(1.0, resources.get("GPU", 1.0))
            # Ray shares the GPU by bookkeeping only; the cap keeps replicas apart.
            torch.cuda.set_per_process_memory_fraction(fraction, self.device)
        else:
            torch.set_num_threads(args.cpu_threads or max(1, math.ceil(resources.get("CPU", 1.0))))
        self._batch_ids = itertools.count()

        async def load(style: str) -> Stylizer:
            return await asyncio.to_thread(Stylizer.from_style, self.registry.get(style), self.device)

        # Wrapped here rather than decorated, so the LRU size can come from the config.
        self._load_style = serve.multiplexed(max_num_models_per_replica=args.styles_per_replica)(load)

    def reconfigure(self, config: dict) -> None:
        batching = BatchingConfig(**config)
        self._stylize_pieces.set_max_batch_size(batching.max_batch_size)
        self._stylize_pieces.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _stylize_pieces(self, pieces: list[tuple[str, np.ndarray]]) -> list[tuple[np.ndarray, _BatchRecord]]:
        stylizer = await self._load_style(serve.get_multiplexed_model_id() or self.registry.default)
        groups: dict[tuple, list[int]] = {}
        for index, (kind, array) in enumerate(pieces):
            groups.setdefault((kind, array.shape), []).append(index)
        results: list = [None] * len(pieces)
        for (kind, _), indices in groups.items():
            batch = np.stack([pieces[i][1] for i in indices])  # (B, H, W, 3) uint8
            start = time.perf_counter()
            # In a thread, so the event loop keeps queueing the next batch meanwhile.
            outputs = await asyncio.to_thread(stylizer.run, batch, kind)
            record = _BatchRecord(next(self._batch_ids), len(indices), (time.perf_counter() - start) * 1000.0)
            metrics.record_unet_batch(kind, len(indices))
            for i, output in zip(indices, outputs):
                results[i] = (output, record)
        return results

    async def stylize(self, job: Job) -> Job:
        """Returns the job with its head crops and background pieces stylized.

        Skips the job (``DeadlineExceeded``) when its deadline passed while it queued.
        """
        deadlines.check(job.deadline, "the Cartoonizer")
        job.record_wait("cartoonizer")
        start = time.perf_counter()
        stylizer = await self._load_style(serve.get_multiplexed_model_id() or self.registry.default)
        pieces = [("head", crop) for crop in job.heads] + [("background", piece) for piece in job.background]
        outputs = await asyncio.gather(*(self._stylize_pieces(piece) for piece in pieces))
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

    def check_health(self) -> None:
        """Serve's per-replica probe, called beside the request queue: the weights are still there.

        Light on purpose (a few stat calls): it runs every few seconds on every replica,
        and a replica whose weights vanished (an unmounted volume) cannot load a style.
        """
        default = self.registry.get(None)
        for path in (default.head, default.background):
            if not path.is_file():
                raise RuntimeError(f"weights file {path} is gone")
