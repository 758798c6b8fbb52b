"""Trials: one suspect input run alone, in a Ray task of its own (``deployments.resend``).

A trial runs in a fresh worker process where nothing else runs (``max_retries=0``: Ray
must not resend an input that took its worker down), with the same core functions the
stages call, on the CPU.
"""

import asyncio
from dataclasses import replace

import numpy as np
import ray

from cartoon.image.faces import Face
from cartoon.image.pipeline import Composer, Job, Options, Pipeline, Result, stylize_job
from cartoon.image.styles import StyleRegistry
from deployments.settings import AppArgs


def _pipeline(args: AppArgs, registry: StyleRegistry) -> Pipeline:
    # The CPU: a trial task holds no GPU, and must not take one a replica was given.
    return Pipeline(registry, replace(args.pipeline_settings(), device="cpu"))


# No CPU reserved: every logical CPU may be held by replicas, and a trial, rare and
# short, must not wait for one of them to go.
@ray.remote(num_cpus=0, max_retries=0)
def cartoonize_alone(args: AppArgs, registry: StyleRegistry, data: bytes, options: Options) -> Result:
    """One image through the whole cartoonization, alone in this worker process."""
    return _pipeline(args, registry)(data, options)


@ray.remote(num_cpus=0, max_retries=0)
def stylize_frame_alone(args: AppArgs, registry: StyleRegistry, rgb: np.ndarray, faces: list[Face],
                        options: Options) -> Job:
    """A video frame prepared and stylized without its finish, as FaceAligner and Cartoonizer do it."""
    pipeline = _pipeline(args, registry)
    job = pipeline.preparer.prepare_array(rgb, options, faces=faces)
    return stylize_job(job, pipeline.stylizer(options.style), finish=False)


@ray.remote(num_cpus=0, max_retries=0)
def compose_frame_alone(job: Job) -> np.ndarray:
    """A video frame's picture, as the Postprocessor composes it."""
    return Composer().picture(job)


# Trials one Ingress replica runs at once: each is a fresh process loading the models
# (hundreds of MB), and a crash under a video job makes every frame in flight a suspect.
MAX_TRIALS_AT_ONCE = 2
_trial_slots: asyncio.Semaphore | None = None


async def run_alone(remote_function, *args, timeout_s: float):
    """Awaits a trial task; past ``timeout_s`` it is cancelled (its worker killed) and TimeoutError raised."""
    global _trial_slots
    if _trial_slots is None:  # made on the replica's event loop
        _trial_slots = asyncio.Semaphore(MAX_TRIALS_AT_ONCE)
    async with asyncio.timeout(timeout_s):
        async with _trial_slots:
            reference = remote_function.remote(*args)
            try:
                return await asyncio.wrap_future(reference.future())
            except asyncio.CancelledError:
                ray.cancel(reference, force=True)
                raise
