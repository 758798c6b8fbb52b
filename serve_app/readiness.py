"""Readiness, asked of the Serve controller at most about once a second, and the UNet's cost.

``/readyz`` is polled by orchestrators and load balancers, and admission needs the
number of running replicas; both read one cached ``Snapshot`` (``TTL_S``), so neither
queues behind image work nor asks the controller per request. Ready means every
deployment has a running replica *and* a Cartoonizer has answered with the cost of
the forward it ran at start-up (``deployments.cartoonizer``): a model that really ran.
"""

import asyncio
import time
from dataclasses import dataclass, field

from ray import serve
from ray.serve.handle import DeploymentHandle

TTL_S = 1.0
# How long one refresh may wait for the Cartoonizer's answer before reporting "unknown".
INFERENCE_WAIT_S = 1.0


@dataclass(frozen=True)
class Snapshot:
    """The app's deployments as the controller saw them, and how the UNet runs."""

    deployments: dict[str, dict] = field(default_factory=dict)
    inference: dict | None = None
    app_found: bool = False

    def running(self, deployment: str) -> int:
        return self.deployments.get(deployment, {}).get("replicas", {}).get("RUNNING", 0)

    @property
    def missing(self) -> list[str]:
        """Deployments without a running replica."""
        return sorted(name for name in self.deployments if not self.running(name))

    @property
    def ready(self) -> bool:
        return self.app_found and not self.missing and self.inference is not None

    def why_not_ready(self) -> str:
        if not self.app_found:
            return "not ready: the app is not deployed"
        if self.missing:
            return f"not ready: no running replica of {', '.join(self.missing)}"
        return "not ready: the Cartoonizer has not reported its start-up forward yet"


class Readiness:
    """One Ingress replica's view of its app, refreshed at most every ``TTL_S`` seconds."""

    def __init__(self, app_name: str, cartoonizer: DeploymentHandle, default_style: str):
        self.app_name = app_name
        self.cartoonizer = cartoonizer.options(multiplexed_model_id=default_style)
        self._snapshot: Snapshot | None = None
        self._taken_at = 0.0
        self._refreshing: asyncio.Task | None = None
        self._inference: dict | None = None
        self._inference_question: asyncio.Future | None = None

    async def snapshot(self) -> Snapshot:
        """The latest snapshot; a stale one is refreshed in the background, a missing one awaited.

        So only the replica's first caller waits for the controller; a refusal under load
        never does.
        """
        if self._snapshot is None or time.monotonic() - self._taken_at > TTL_S:
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.ensure_future(self._refresh())
            if self._snapshot is None:
                await asyncio.shield(self._refreshing)
        return self._snapshot

    async def _refresh(self) -> None:
        status, inference = await asyncio.gather(asyncio.to_thread(serve.status), self._ask_inference())
        app = status.applications.get(self.app_name)
        deployments = {
            name: {
                "status": str(getattr(deployment.status, "value", deployment.status)),
                "replicas": {str(getattr(state, "value", state)): count
                             for state, count in deployment.replica_states.items()},
            }
            for name, deployment in (app.deployments.items() if app else ())
        }
        self._snapshot = Snapshot(deployments, inference, app is not None)
        self._taken_at = time.monotonic()

    async def _ask_inference(self) -> dict | None:
        """How the UNet runs and what its start-up forward cost; asked until one replica answers.

        The question is not cancelled when the wait ends (a replica may still be
        starting), so a slow answer neither queues a second question nor makes readiness
        flap. It is asked again when it failed, or when Serve cancelled it with the
        request that asked (a client that gave up on its probe).
        """
        if self._inference is None:
            question = self._inference_question
            if question is None or (question.done() and (question.cancelled() or question.exception() is not None)):
                self._inference_question = asyncio.ensure_future(self.cartoonizer.inference.remote())
            try:
                self._inference = await asyncio.wait_for(asyncio.shield(self._inference_question), INFERENCE_WAIT_S)
            except (Exception, asyncio.CancelledError):  # unknown for now: a replica starting or lost
                pass
        return self._inference
