"""Video jobs in a folder every node sees: one folder per job, its upload, result and state.

The Ingress replicas (HTTP, admission, dispatch) and the job runners
(``deployments.video_jobs``) all read and write the same folder (``jobs_dir``: a local
folder on one machine, a shared volume on a cluster), so any replica answers for any
job and a job outlives the replica that took it or ran it.

Who writes what, so that no two writers race on one file:

- ``state.json``: the job's owner of the moment: the Ingress that took the POST until a
  runner starts the job, then that runner; the Ingress that sees its runner die writes
  the next attempt or ``lost``. Replaced whole, never half-written.
- ``heartbeat``: the time, rewritten by whoever holds the job (the Ingress while the job
  waits in its queue, the runner while it runs); a queued or running job whose heartbeat
  is older than ``lost_after_s`` has lost its holder and is taken up again.
- ``attempt-N``: created once, exclusively, by whoever sends attempt N to a runner, so a
  job whose holder died is taken up again once, not by every replica that notices.
- ``cancel``: created by DELETE, read by the runner between frames.
"""

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

_logger = logging.getLogger("ray.serve")

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled", "lost")
STATE_FILE = "state.json"
HEARTBEAT_FILE = "heartbeat"
CANCEL_FILE = "cancel"
INPUT_FILE = "input"
CANCELLED_ERROR = {"code": "cancelled", "message": "the job was cancelled"}


def lost_error(reason: str) -> dict:
    return {"code": "job_lost", "message": f"{reason}; submit it again"}


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
    """The jobs under ``root``; every method takes any spelling of a job's id."""

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
        self._write(job_id, {"id": job_id, "state": "queued", "attempt": 0, "created_at": now, "updated_at": now,
                             "progress": {"frames_done": 0, "frames_total": 0, "fps": 0.0, "eta_s": None},
                             "error": None, **fields})
        self.beat(job_id)
        return job_id

    def input_path(self, job_id: str) -> Path:
        return self._known_folder(job_id) / INPUT_FILE

    def output_path(self, job_id: str, suffix: str) -> Path:
        return self._known_folder(job_id) / f"output.{suffix}"

    def _replace(self, path: Path, text: str, job_id: str) -> None:
        temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_text(text)
        except FileNotFoundError as exc:  # the folder went between a read and this write
            raise JobGone(job_id) from exc
        os.replace(temporary, path)  # readers see the old file or the new one, never half

    def _write(self, job_id: str, state: dict) -> None:
        self._replace(self._known_folder(job_id) / STATE_FILE, json.dumps(state), job_id)

    def _read_raw(self, job_id: str) -> dict | None:
        folder = self._folder(job_id)
        if folder is None:
            return None
        try:
            return json.loads((folder / STATE_FILE).read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None

    def read(self, job_id: str) -> dict | None:
        """The job's state as clients see it (a cancellation applied), or None if unknown."""
        state = self._read_raw(job_id)
        if state is not None and state["state"] in ACTIVE and self.cancel_requested(job_id):
            return {**state, "state": "cancelled", "error": CANCELLED_ERROR}
        return state

    def ended(self, job_id: str) -> bool:
        """Whether the job's holder has written its end (a cancellation asked for is not one yet)."""
        state = self._read_raw(job_id)
        return state is not None and state["state"] in FINISHED

    def update(self, job_id: str, **fields) -> dict:
        """Rewrites the job's state with ``fields``; only the job's owner of the moment calls it.

        Raises:
            JobGone: the job's folder was deleted; nothing is written.
        """
        state = self._read_raw(job_id)
        if state is None:
            raise JobGone(job_id)
        state = {**state, **fields, "updated_at": time.time()}
        self._write(job_id, state)
        return state

    def beat(self, job_id: str) -> None:
        """Says that the job's holder is alive.

        Raises:
            JobGone: the job's folder was deleted.
        """
        self._replace(self._known_folder(job_id) / HEARTBEAT_FILE, repr(time.time()), job_id)

    def last_beat(self, job_id: str) -> float:
        try:
            return float((self._known_folder(job_id) / HEARTBEAT_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return 0.0

    def claim_attempt(self, job_id: str, attempt: int) -> bool:
        """Whether the caller is the one to send ``attempt`` of the job (exclusive create)."""
        try:
            os.close(os.open(self._known_folder(job_id) / f"attempt-{attempt}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except FileNotFoundError as exc:
            raise JobGone(job_id) from exc
        return True

    def cancel(self, job_id: str) -> None:
        try:
            (self._known_folder(job_id) / CANCEL_FILE).touch()
        except FileNotFoundError as exc:
            raise JobGone(job_id) from exc

    def cancel_requested(self, job_id: str) -> bool:
        folder = self._folder(job_id)
        return folder is not None and (folder / CANCEL_FILE).exists()

    def remove_input(self, job_id: str) -> None:
        """Deletes the upload: once a job has ended, whatever the outcome, it is nobody's to keep."""
        folder = self._folder(job_id)
        if folder is not None:
            (folder / INPUT_FILE).unlink(missing_ok=True)

    def delete(self, job_id: str) -> None:
        """Deletes the job and every file of it."""
        folder = self._folder(job_id)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def jobs(self) -> Iterator[dict]:
        """Every job's state (as ``read``); jobs deleted meanwhile are skipped."""
        for folder in self.root.iterdir():
            state = self.read(folder.name)
            if state is not None:
                yield state

    def stale(self, now: float | None = None) -> list[dict]:
        """The queued or running jobs whose holder has not said a word for ``lost_after_s``."""
        now = time.time() if now is None else now
        return [state for state in self.jobs()
                if state["state"] in ACTIVE and now - self.last_beat(state["id"]) > self.lost_after_s]

    def usage_bytes(self) -> int:
        """Bytes of every file of every job: what the disk bound counts."""
        total = 0
        for folder in self.root.iterdir():
            try:
                with os.scandir(folder) as entries:
                    total += sum(entry.stat().st_size for entry in entries if entry.is_file())
            except (FileNotFoundError, NotADirectoryError):  # deleted while counted
                continue
        return total

    def purge(self, retention_s: float, now: float | None = None) -> int:
        """Deletes the jobs that finished more than ``retention_s`` ago; returns how many.

        An ended job's upload is deleted too whatever its age, should its runner not have.
        """
        now = time.time() if now is None else now
        removed = 0
        for state in list(self.jobs()):
            if state["state"] not in FINISHED:
                continue
            self.remove_input(state["id"])
            if now - state.get("finished_at", state["updated_at"]) > retention_s:
                self.delete(state["id"])
                removed += 1
        return removed


class Heartbeats:
    """Keeps each job it holds from looking lost: its heartbeat rewritten every ``period_s``.

    One task per job, so a job whose folder is gone (deleted under it) stops its own
    heartbeat only, never another's.
    """

    def __init__(self, store: JobStore, period_s: float):
        self.store, self.period_s = store, period_s
        self._tasks: dict[str, asyncio.Task] = {}

    def start(self, job_id: str) -> None:
        self.stop(job_id)
        self._tasks[job_id] = asyncio.ensure_future(self._beat(job_id))

    def stop(self, job_id: str) -> None:
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()

    async def _beat(self, job_id: str) -> None:
        while True:
            try:
                await asyncio.to_thread(self.store.beat, job_id)
            except JobGone:
                _logger.warning("video job %s: its folder is gone, its heartbeat stops", job_id)
                return
            except OSError:  # a shared volume's hiccup: the next beat may well pass
                _logger.exception("video job %s: a heartbeat could not be written", job_id)
            await asyncio.sleep(self.period_s)
