"""Poison by evidence across replicas: one book of suspects per app, and trials run alone.

The rules are ``serve_app.suspects``'s. The book lives in a small named, detached actor
(``SharedSuspectBook``, no CPU reserved), one per application, so every Ingress replica,
on any node, reads and writes the same marks, and a replaced Ingress finds them again.
A trial is a Ray task of its own (``max_retries=0``: Ray must not resend an input that
took its worker down), in a fresh worker process where nothing else runs, with the same
core functions the stages call, on the CPU.
"""

import asyncio
import logging
from dataclasses import replace

import numpy as np
import ray
from ray.exceptions import RayError

from cartoon.image.faces import Face
from cartoon.image.pipeline import Composer, Job, Options, Pipeline, Result, stylize_job
from cartoon.image.styles import StyleRegistry
from deployments.settings import AppArgs
from serve_app.suspects import Decision, SuspectBook

_logger = logging.getLogger("ray.serve")

NAMESPACE = "serve"


@ray.remote(num_cpus=0, max_restarts=-1)
class SharedSuspectBook:
    """A ``SuspectBook`` behind an actor: one call at a time, so its rules need no lock."""

    def __init__(self, ttl_s: float, trial_s: float):
        self.book = SuspectBook(ttl_s, trial_s)

    def before_send(self, key: str) -> Decision:
        return self.book.before_send(key)

    def on_death(self, key: str, death: str) -> Decision:
        return self.book.on_death(key, death)

    def on_trial(self, key: str, crashed: bool) -> None:
        self.book.on_trial(key, crashed)

    def abandon_trial(self, key: str) -> None:
        self.book.abandon_trial(key)


class Evidence:
    """An Ingress replica's view of its application's book.

    If the book cannot be reached (its node lost, the actor restarting with an empty
    book) a send goes ahead and a death leads to a trial: an input goes alone rather
    than to a shared replica whenever there is doubt.
    """

    def __init__(self, app_name: str, ttl_s: float, trial_s: float):
        self.book = SharedSuspectBook.options(
            name=f"cartoon-suspects:{app_name}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        ).remote(ttl_s, trial_s)

    async def _ask(self, method: str, *args, unreachable=None):
        try:
            return await getattr(self.book, method).remote(*args)
        except RayError:
            _logger.warning("the book of suspects did not answer %s; going on without it", method, exc_info=True)
            return unreachable

    async def before_send(self, key: str) -> Decision:
        return await self._ask("before_send", key, unreachable=Decision.SEND)

    async def on_death(self, key: str, death: str) -> Decision:
        return await self._ask("on_death", key, death, unreachable=Decision.TRY_ALONE)

    async def on_trial(self, key: str, crashed: bool) -> None:
        await self._ask("on_trial", key, crashed)

    async def abandon_trial(self, key: str) -> None:
        await self._ask("abandon_trial", key)


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


async def run_alone(remote_function, *args, timeout_s: float):
    """Awaits a trial task; past ``timeout_s`` it is cancelled (its worker killed) and TimeoutError raised."""
    reference = remote_function.remote(*args)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(reference.future()), timeout_s)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        ray.cancel(reference, force=True)
        raise
