"""The Ingress's part of a video job once accepted: send it to a runner, follow it, take it up again.

A job is sent to the ``VideoJobRunner`` deployment through its handle and followed to
its end. While it waits in this replica's queue the job's heartbeat is this replica's;
a runner beats it while running it. When the runner dies under it, the job is sent again
(from the start), up to ``job_max_attempts`` times, then ends ``lost`` with the reason.
Every replica also sweeps the store on a timer: a queued or running job whose holder
stopped beating (an Ingress gone with its queue, a runner and its Ingress both gone) is
taken up again the same way, and finished jobs are deleted after ``job_retention_s``.
"""

import asyncio
import logging
import time

from ray.serve.handle import DeploymentHandle

from deployments.failures import replica_lost
from deployments.job_store import Heartbeats, JobGone, JobStore, lost_error
from deployments.settings import AppArgs
from serve_app.errors import ApiError, to_api_error

_logger = logging.getLogger("ray.serve")


class Dispatcher:
    def __init__(self, store: JobStore, runners: DeploymentHandle, args: AppArgs):
        self.store, self.runners, self.args = store, runners, args
        self.heartbeats = Heartbeats(store, args.job_lost_after_s / 4)
        self.following: dict[str, asyncio.Task] = {}

    def hold(self, job_id: str) -> None:
        """Beats the job's heartbeat from here (while its upload arrives, while it waits)."""
        self.heartbeats.start(job_id)

    def release(self, job_id: str) -> None:
        self.heartbeats.stop(job_id)

    def send(self, job_id: str, attempt: int) -> None:
        """Sends attempt ``attempt`` of a queued job to the runners and follows it to its end."""
        self.hold(job_id)
        task = asyncio.ensure_future(self._follow(job_id, attempt))
        self.following[job_id] = task

        def ended(_: asyncio.Task) -> None:
            if self.following.get(job_id) is task:
                del self.following[job_id]
                self.release(job_id)

        task.add_done_callback(ended)

    async def _follow(self, job_id: str, attempt: int) -> None:
        try:
            await self.runners.run.remote(job_id, attempt)
        except Exception as exc:
            if replica_lost(exc):
                await self.retake(job_id, attempt, "its runner stopped (its replica or node was lost)")
                return
            error = to_api_error(exc, self.args.retry_after_s, self.args.request_timeout_s)
            if error is None:
                _logger.error("video job %s failed", job_id, exc_info=exc)
                error = ApiError(500, "internal", "the video could not be processed; this is our bug")
            await self._write(job_id, attempt, state="failed", error=error.body()["error"], finished_at=time.time())

    async def _write(self, job_id: str, expected_attempt: int, **fields) -> bool:
        """Writes the job's state if ``expected_attempt`` is still its newest; whether it did."""

        def write() -> bool:
            state = self.store.read(job_id)
            if state is None or state["attempt"] != expected_attempt:
                return False
            self.store.update(job_id, **fields)
            return True

        try:
            return await asyncio.to_thread(write)
        except JobGone:
            return False

    async def retake(self, job_id: str, attempt: int, reason: str) -> None:
        """Sends the job again after its attempt ``attempt`` was lost, or ends it ``lost``.

        Only one replica does so per attempt, however many noticed (``claim_attempt``).
        """
        try:
            claimed = await asyncio.to_thread(self.store.claim_attempt, job_id, attempt + 1)
        except JobGone:
            return
        if not claimed:
            return
        if attempt + 1 >= self.args.job_max_attempts:
            _logger.warning("video job %s lost after %d attempts: %s", job_id, attempt + 1, reason)
            tries = "once" if attempt == 0 else f"{attempt + 1} times"
            if await self._write(job_id, attempt, state="lost", finished_at=time.time(),
                                 error=lost_error(f"the job was started {tries} and {reason}")):
                await asyncio.to_thread(self.store.remove_input, job_id)
            return
        _logger.warning("video job %s: attempt %d ended before the job did (%s); sending it again",
                        job_id, attempt, reason)
        if await self._write(job_id, attempt, state="queued", attempt=attempt + 1):
            self.send(job_id, attempt + 1)

    async def sweep(self) -> None:
        """Takes up the jobs whose holder went silent, and deletes expired ones."""
        for state in await asyncio.to_thread(self.store.stale):
            if state["id"] not in self.following:
                await self.retake(state["id"], state["attempt"], "its holder stopped answering")
        await asyncio.to_thread(self.store.purge, self.args.job_retention_s)

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.args.job_lost_after_s / 2)
            try:
                await self.sweep()
            except Exception:  # one bad pass (a shared volume's hiccup) must not end the timer
                _logger.exception("sweeping the video jobs failed")
