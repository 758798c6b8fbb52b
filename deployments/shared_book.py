"""The book of suspects shared by every Ingress replica of an application: a small named actor.

The rules are ``deployments.suspects``'s. The book lives in a named, detached actor
(``SharedSuspectBook``, no CPU reserved), one per application, so every Ingress replica,
on any node, reads and writes the same marks, and a replaced Ingress finds them again.
This module imports nothing heavy: the actor's process loads only Ray and the rules.
"""

import logging

import ray
from ray.exceptions import RayError

from deployments.suspects import Decision, SuspectBook

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
