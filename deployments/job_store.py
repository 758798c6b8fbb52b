"""Video jobs where every node sees them: one folder per job, its upload, result and state.

The Ingress replicas (HTTP, admission, dispatch) and the job runners
(``deployments.video_jobs``) all read and write the same tree (``jobs_dir``): a local
folder on one machine, a shared volume on a cluster, or an object-store URI (``s3://``,
``gs://``, ``abfs://``) through pyarrow's filesystems, as the Ray Data engine reads its
folders. So any replica answers for any job, and a job outlives the replica that took it
or ran it.

PyAV reads and writes local files, so the upload and the result pass through a local
scratch file of the process at work on them: the Ingress stages the body, checks it and
stores it (``put_input``); a runner fetches the upload (``fetch_input``), encodes to a
local file and stores the result whole once it is done (``put_output``); GET /result
streams it from the store (``read_output``). One code path for every filesystem.

Who writes what, so that no two writers race on one file:

- ``state.json``: the job's owner of the moment: the Ingress that took the POST until a
  runner starts the job, then that runner; the Ingress that sees its runner die writes
  the next attempt or ``lost``. Replaced whole, never half-written.
- ``heartbeat``: the time, rewritten by whoever holds the job (the Ingress while the job
  waits in its queue, the runner while it runs); a queued or running job whose heartbeat
  is older than ``lost_after_s`` has lost its holder and is taken up again.
- ``attempt-N``: claimed once, by whoever sends attempt N to a runner, so a job whose
  holder died is taken up again once, not by every replica that notices. On a local
  filesystem the claim is an exclusive file create; object stores have none through
  pyarrow, so there it is a put-if-absent key in the Ray cluster's GCS, which every node
  shares.
- ``cancel``: created by DELETE, read by the runner between frames.
"""

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import ray
from ray.experimental import internal_kv

_logger = logging.getLogger("ray.serve")

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled", "lost")
STATE_FILE = "state.json"
HEARTBEAT_FILE = "heartbeat"
CANCEL_FILE = "cancel"
INPUT_FILE = "input"
CANCELLED_ERROR = {"code": "cancelled", "message": "the job was cancelled"}
# Filesystems whose written object appears whole when its stream closes, and whose
# "rename" is a copy: a file is replaced by writing it in place. ``mock`` is Arrow's
# in-memory stand-in for an object store.
OBJECT_STORES = frozenset({"s3", "gcs", "abfs", "mock"})
# The namespace of the attempt claims in the GCS key-value store.
CLAIMS_NAMESPACE = "cartoon-jobs"
CHUNK_BYTES = 1 << 20


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


def redacted(uri: str) -> str:
    """``uri`` without what may be secret: its user and password, and its query (keys, tokens)."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname or ''}{parts.path}"


def scrubbed(text: str, uri: str) -> str:
    """``text`` (an error of pyarrow's about ``uri``) with the URI's secrets replaced by ``***``."""
    parts = urlsplit(uri)
    secrets = [parts.username, parts.password, *(value for _, value in parse_qsl(parts.query))]
    text = text.replace(uri, redacted(uri))
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def open_root(text: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path on it of ``jobs_dir``: a local path, or any URI pyarrow knows.

    Raises:
        ValueError: pyarrow does not know the URI (the message shows none of its secrets).
    """
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(text)
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, ValueError, OSError) as exc:
        # Not chained: pyarrow's own message, in the traceback, would show the secrets.
        raise ValueError(f"jobs_dir {redacted(text)} cannot be opened: {scrubbed(str(exc), text)}") from None
    return filesystem, path.rstrip("/")


class JobGone(Exception):
    """The job's folder is no longer there (deleted by its client or by retention)."""


class JobStore:
    """The jobs under ``root`` (a path or URI, or a path on ``filesystem``); every method takes any spelling of an id."""

    def __init__(self, root: str | Path, lost_after_s: float, filesystem: pafs.FileSystem | None = None):
        if filesystem is None:
            self.filesystem, self.root = open_root(str(root))
        else:
            self.filesystem, self.root = filesystem, str(root).rstrip("/")
        self.lost_after_s = lost_after_s
        self.in_place = self.filesystem.type_name in OBJECT_STORES
        self.local = isinstance(self.filesystem, pafs.LocalFileSystem)
        self.filesystem.create_dir(self.root, recursive=True)

    def _folder(self, job_id: str) -> str | None:
        """The job's folder, or None for ids that are not ours (never a path outside the root)."""
        canonical = canonical_id(job_id)
        return None if canonical is None else self._join(canonical)

    def _join(self, *names: str) -> str:
        return "/".join([self.root, *names]) if self.root else "/".join(names)

    def _known_folder(self, job_id: str) -> str:
        folder = self._folder(job_id)
        if folder is None:
            raise JobGone(job_id)
        return folder

    def _exists(self, path: str) -> bool:
        return self.filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def create(self, fields: dict) -> str:
        """A new queued job's id; its upload comes next (``put_input``)."""
        job_id = str(uuid.uuid4())
        self.filesystem.create_dir(self._join(job_id), recursive=False)
        now = time.time()
        self._write(job_id, {"id": job_id, "state": "queued", "attempt": 0, "created_at": now, "updated_at": now,
                             "progress": {"frames_done": 0, "frames_total": 0, "fps": 0.0, "eta_s": None},
                             "error": None, **fields})
        self.beat(job_id)
        return job_id

    def _store(self, job_id: str, name: str, chunks) -> None:
        """Writes ``chunks`` to the job's file ``name``; readers see the old file or the new one, never half.

        Raises:
            JobGone: the job's folder was deleted (a local filesystem says so as it writes).
        """
        path = f"{self._known_folder(job_id)}/{name}"
        written = path if self.in_place else f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with self.filesystem.open_output_stream(written) as stream:
                for chunk in chunks:
                    stream.write(chunk)
        except FileNotFoundError as exc:  # the folder went between a read and this write
            raise JobGone(job_id) from exc
        if not self.in_place:
            self.filesystem.move(written, path)

    def _load(self, job_id: str, name: str) -> bytes | None:
        folder = self._folder(job_id)
        if folder is None:
            return None
        try:
            with self.filesystem.open_input_stream(f"{folder}/{name}") as stream:
                return stream.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _write(self, job_id: str, state: dict) -> None:
        self._store(job_id, STATE_FILE, [json.dumps(state).encode()])

    def _read_raw(self, job_id: str) -> dict | None:
        data = self._load(job_id, STATE_FILE)
        try:
            return None if data is None else json.loads(data)
        except json.JSONDecodeError:
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

    def _alive(self, job_id: str) -> str:
        """The job's folder, checked to hold a state first: on an object store a write never
        fails for want of a folder, and would bring a deleted job's folder back.

        Raises:
            JobGone: the job was deleted.
        """
        folder = self._known_folder(job_id)
        if not self._exists(f"{folder}/{STATE_FILE}"):
            raise JobGone(job_id)
        return folder

    def beat(self, job_id: str) -> None:
        """Says that the job's holder is alive.

        Raises:
            JobGone: the job's folder was deleted.
        """
        self._alive(job_id)
        self._store(job_id, HEARTBEAT_FILE, [repr(time.time()).encode()])

    def last_beat(self, job_id: str) -> float:
        data = self._load(job_id, HEARTBEAT_FILE)
        try:
            return 0.0 if data is None else float(data)
        except ValueError:
            return 0.0

    def claim_attempt(self, job_id: str, attempt: int) -> bool:
        """Whether the caller is the one to send ``attempt`` of the job (created once, exclusively).

        Raises:
            JobGone: the job was deleted.
        """
        folder = self._alive(job_id)
        name = f"attempt-{attempt}"
        if not self.local:
            already = internal_kv._internal_kv_put(f"{folder}/{name}", b"", overwrite=False,
                                                   namespace=CLAIMS_NAMESPACE)
            return not already
        try:
            os.close(os.open(f"{folder}/{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except FileNotFoundError as exc:
            raise JobGone(job_id) from exc
        return True

    def cancel(self, job_id: str) -> None:
        """Asks the job's runner to stop.

        Raises:
            JobGone: the job was deleted.
        """
        self._alive(job_id)
        self._store(job_id, CANCEL_FILE, [b""])

    def cancel_requested(self, job_id: str) -> bool:
        folder = self._folder(job_id)
        return folder is not None and self._exists(f"{folder}/{CANCEL_FILE}")

    def put_input(self, job_id: str, source: Path) -> None:
        """Stores the upload from the local file ``source``.

        Raises:
            JobGone: the job was deleted meanwhile.
        """
        self._alive(job_id)
        self._store(job_id, INPUT_FILE, _chunks(source))

    def has_input(self, job_id: str) -> bool:
        folder = self._folder(job_id)
        return folder is not None and self._exists(f"{folder}/{INPUT_FILE}")

    def fetch_input(self, job_id: str, destination: Path) -> None:
        """Copies the upload to the local file ``destination``.

        Raises:
            JobGone: the job, or its upload, is gone.
        """
        try:
            with self.filesystem.open_input_stream(f"{self._known_folder(job_id)}/{INPUT_FILE}") as stream, \
                    open(destination, "wb") as handle:
                while chunk := stream.read(CHUNK_BYTES):
                    handle.write(chunk)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise JobGone(job_id) from exc

    def put_output(self, job_id: str, suffix: str, source: Path) -> None:
        """Stores the result from the local file ``source``, whole (readers never see part of it).

        Raises:
            JobGone: the job was deleted meanwhile.
        """
        self._alive(job_id)
        self._store(job_id, f"output.{suffix}", _chunks(source))

    def output_size(self, job_id: str, suffix: str) -> int | None:
        """The result's size in bytes, or None while there is none."""
        folder = self._folder(job_id)
        if folder is None:
            return None
        info = self.filesystem.get_file_info(f"{folder}/output.{suffix}")
        return info.size if info.type == pafs.FileType.File else None

    def read_output(self, job_id: str, suffix: str) -> Iterator[bytes]:
        """The result, a chunk at a time.

        Raises:
            JobGone: the result is gone (deleted since it was asked for).
        """
        try:
            stream = self.filesystem.open_input_stream(f"{self._known_folder(job_id)}/output.{suffix}")
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise JobGone(job_id) from exc
        with stream:
            while chunk := stream.read(CHUNK_BYTES):
                yield chunk

    def remove_input(self, job_id: str) -> None:
        """Deletes the upload: once a job has ended, whatever the outcome, it is nobody's to keep."""
        folder = self._folder(job_id)
        if folder is not None:
            try:
                self.filesystem.delete_file(f"{folder}/{INPUT_FILE}")
            except (FileNotFoundError, NotADirectoryError):
                pass

    def delete(self, job_id: str) -> None:
        """Deletes the job and every file of it (and its claims)."""
        folder = self._folder(job_id)
        if folder is None:
            return
        try:
            self.filesystem.delete_dir(folder)
        except (FileNotFoundError, NotADirectoryError):
            pass
        # Claims in the GCS exist only where Ray runs (the replicas); a store used without
        # Ray has made none.
        if not self.local and ray.is_initialized():
            internal_kv._internal_kv_del(f"{folder}/", del_by_prefix=True, namespace=CLAIMS_NAMESPACE)

    def _ids(self) -> list[str]:
        """The job ids under the root (names that are no UUID are not jobs)."""
        listing = self.filesystem.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return [info.base_name for info in listing
                if info.type == pafs.FileType.Directory and canonical_id(info.base_name) == info.base_name]

    def jobs(self) -> Iterator[dict]:
        """Every job's state (as ``read``); jobs deleted meanwhile are skipped."""
        for job_id in self._ids():
            state = self.read(job_id)
            if state is not None:
                yield state

    def stale(self, now: float | None = None) -> list[dict]:
        """The queued or running jobs whose holder has not said a word for ``lost_after_s``."""
        now = time.time() if now is None else now
        return [state for state in self.jobs()
                if state["state"] in ACTIVE and now - self.last_beat(state["id"]) > self.lost_after_s]

    def _files(self) -> list[pafs.FileInfo]:
        """Every file under the root, in one listing (one request, paged, on an object store).

        A local folder deleted while it is listed fails the listing: it is listed again.
        """
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        tries = 3
        while True:
            try:
                return [info for info in self.filesystem.get_file_info(selector) if info.type == pafs.FileType.File]
            except FileNotFoundError:
                tries -= 1
                if not tries:
                    raise

    def usage_bytes(self) -> int:
        """Bytes of every file of every job: what the disk bound counts."""
        return sum(info.size for info in self._files())

    def purge(self, retention_s: float, now: float | None = None) -> int:
        """Deletes the jobs that finished more than ``retention_s`` ago; returns how many.

        An ended job's upload is deleted too whatever its age, should its runner not have;
        and so is a folder with no state whose files are all older than ``lost_after_s``
        (what a heartbeat written as its job was deleted leaves on an object store).
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
        newest: dict[str, float] = {}
        stated = set()
        for info in self._files():
            job_id = PurePosixPath(info.path).parent.name
            stated.update([job_id] if info.base_name == STATE_FILE else [])
            if info.mtime is not None:
                newest[job_id] = max(newest.get(job_id, 0.0), info.mtime.timestamp())
        for job_id, mtime in newest.items():
            if job_id not in stated and canonical_id(job_id) == job_id and now - mtime > self.lost_after_s:
                self.delete(job_id)
        return removed


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


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
