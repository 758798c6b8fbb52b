"""Video jobs on disk: one folder per job holding its upload, its result and its state.

Every Ingress replica reads and writes the same folder, so any replica answers for any
job, and a job outlives the replica that took it: the replica running a job rewrites its
state at least every ``lost_after_s / 4``; a job still queued or running whose state is
older than ``lost_after_s`` has lost its runner (a replica restarted or died) and is
reported ``lost``, never left hanging. A cancellation is a file of its own, so the
replica that answers DELETE needs no word with the one running the job.
"""

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

_logger = logging.getLogger("ray.serve")

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled", "lost")
STATE_FILE = "state.json"
CANCEL_FILE = "cancel"
INPUT_FILE = "input"
LOST_ERROR = {"code": "job_lost", "message": "the replica running this job stopped before it finished; submit it again"}
CANCELLED_ERROR = {"code": "cancelled", "message": "the job was cancelled"}


def canonical_id(job_id: str) -> str | None:
    """The one spelling of a job id (a lower-case UUID), or None for what is not a UUID.

    ``uuid.UUID`` reads upper case, braces, a ``urn:uuid:`` prefix and no hyphens: each
    spelling of the same UUID names the same job, and none reaches a path as typed.
    """
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, TypeError):
        return None


class JobGone(Exception):
    """The job's folder is no longer there (deleted by its client or by retention)."""


class JobStore:
    def __init__(self, root: str | Path, lost_after_s: float):
        self.root = Path(root)
        self.lost_after_s = lost_after_s
        self.root.mkdir(parents=True, exist_ok=True)

    def _folder(self, job_id: str) -> Path | None:
        """The job's folder, or None for ids that are not ours (never a path outside the root)."""
        canonical = canonical_id(job_id)
        return None if canonical is None else self.root / canonical

    def _known_folder(self, job_id: str) -> Path:
        folder = self._folder(job_id)
        if folder is None:
            raise JobGone(job_id)
        return folder

    def create(self, fields: dict) -> str:
        """A new queued job's id; its folder is ready for the upload (``input_path``)."""
        job_id = str(uuid.uuid4())
        (self.root / job_id).mkdir()
        now = time.time()
        self._write(job_id, {"id": job_id, "state": "queued", "created_at": now, "updated_at": now,
                             "progress": {"frames_done": 0, "frames_total": 0, "fps": 0.0, "eta_s": None},
                             "error": None, **fields})
        return job_id

    def input_path(self, job_id: str) -> Path:
        return self._known_folder(job_id) / INPUT_FILE

    def output_path(self, job_id: str, suffix: str) -> Path:
        return self._known_folder(job_id) / f"output.{suffix}"

    def _write(self, job_id: str, state: dict) -> None:
        path = self._known_folder(job_id) / STATE_FILE
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(state))
        except FileNotFoundError as exc:  # the folder went between the read and this write
            raise JobGone(job_id) from exc
        os.replace(temporary, path)  # readers see the old state or the new one, never half

    def _read_raw(self, job_id: str) -> dict | None:
        folder = self._folder(job_id)
        if folder is None:
            return None
        try:
            return json.loads((folder / STATE_FILE).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None

    def read(self, job_id: str) -> dict | None:
        """The job's state as clients see it (cancelled and lost applied), or None if unknown."""
        state = self._read_raw(job_id)
        if state is None or state["state"] not in ACTIVE:
            return state
        if self.cancel_requested(job_id):
            return {**state, "state": "cancelled", "error": CANCELLED_ERROR}
        if time.time() - state["updated_at"] > self.lost_after_s:
            return {**state, "state": "lost", "error": LOST_ERROR}
        return state

    def update(self, job_id: str, **fields) -> dict:
        """Rewrites the job's state with ``fields`` (and the time: the runner's heartbeat).

        Raises:
            JobGone: the job's folder was deleted; nothing is written.
        """
        state = self._read_raw(job_id)
        if state is None:
            raise JobGone(job_id)
        state = {**state, **fields, "updated_at": time.time()}
        self._write(job_id, state)
        return state

    def cancel(self, job_id: str) -> None:
        (self._known_folder(job_id) / CANCEL_FILE).touch()

    def cancel_requested(self, job_id: str) -> bool:
        folder = self._folder(job_id)
        return folder is not None and (folder / CANCEL_FILE).exists()

    def purge(self, older_than_s: float) -> int:
        """Deletes jobs not written for ``older_than_s``, finished or lost; returns how many."""
        removed = 0
        for folder in self.root.iterdir():
            state = self.read(folder.name)
            if state is not None and state["state"] in FINISHED and time.time() - state["updated_at"] > older_than_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed


class Heartbeats:
    """Keeps each job it holds from looking lost: its state rewritten every ``period_s``.

    One task per job, so a job whose folder is gone (deleted under it) stops its own
    heartbeat only, never another's. On the event loop, as every other write of a job's
    state by its runner: a write from a thread could read a job's state just before the
    runner wrote "done" and then write "running" back over it.
    """

    def __init__(self, store: JobStore, period_s: float):
        self.store, self.period_s = store, period_s
        self._tasks: dict[str, asyncio.Task] = {}

    def start(self, job_id: str) -> None:
        self._tasks[job_id] = asyncio.ensure_future(self._beat(job_id))

    def stop(self, job_id: str) -> None:
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()

    async def _beat(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            try:
                self.store.update(job_id)
            except JobGone:
                _logger.warning("video job %s: its folder is gone, its heartbeat stops", job_id)
                return
            except OSError:  # a shared volume's hiccup: the next beat may well pass
                _logger.exception("video job %s: a heartbeat could not be written", job_id)
