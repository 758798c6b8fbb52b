"""The folder command's files: which inputs to do, where their outputs go, and writing them whole.

Shared by both engines of ``cartoonize-batch``: the output tree mirrors the input tree and
keeps each file's stem; each output is written to a temporary file and renamed, so an
output that exists is complete, and a stopped run resumes where it stopped (existing
outputs are skipped unless ``--overwrite``). Folders may be local paths or pyarrow
filesystem URIs (s3://, gs://).
"""

import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePath, PurePosixPath
from typing import TextIO

import pyarrow as pa
import pyarrow.fs as pafs
from tqdm import tqdm

from cartoon.batch import videos
from cartoon.image.codec import INPUT_SUFFIXES, SUFFIX_BY_FORMAT

LOCAL_FILESYSTEM = pafs.LocalFileSystem()


class UsageError(Exception):
    """The command line asks for something that cannot be done; exit code 2."""


class Failure(Exception):
    """One photo's failure.

    Attributes:
        status: the HTTP status, or None (no answer, or the in-process pipeline).
        retryable: whether trying again may succeed (503, 504, a dropped connection).
        retry_after: seconds the service asked us to wait, if it said.
    """

    def __init__(self, message: str, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retryable, self.retry_after = status, retryable, retry_after


@dataclass
class Tally:
    """What happened to every photo, filled in as photos finish.

    With a ``report`` open, each failure is written to it as one JSON line the moment
    it is known, so a run that is killed still leaves every failure it saw. Failures may
    come from two threads (the Ray engine plans in one while photos finish in another).
    """

    done: int = 0
    skipped: int = 0
    retries: int = 0
    ignored: int = 0  # files with neither an image nor a video suffix
    links_cut: int = 0  # links to folders walked already (loops, second names), not followed
    failures: list[dict] = field(default_factory=list)
    report: TextIO | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self, relative: PurePath, error: str, status: int | None = None) -> None:
        failure = {"input": shown(relative), "status": status, "error": error}
        with self._lock:
            self.failures.append(failure)
            if self.report is not None:
                self.report.write(json.dumps(failure) + "\n")
                self.report.flush()


def shown(relative: PurePath) -> str:
    """A path as reports and messages print it: bytes of the name that are not UTF-8 as ``\\xff`` escapes."""
    return os.fsencode(str(relative)).decode("utf-8", "backslashreplace")


def is_utf8(relative: PurePath) -> bool:
    """Whether the name is UTF-8; Python holds a local name's other bytes as lone surrogates."""
    try:
        str(relative).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Location:
    """A folder on a pyarrow filesystem: a local path, or a URI such as ``s3://bucket/photos``."""

    filesystem: pafs.FileSystem
    path: str  # on ``filesystem``, without a trailing slash; "" is its root

    @classmethod
    def parse(cls, text: str) -> "Location":
        """A local path (relative ones from the working directory) or any URI pyarrow knows.

        Raises:
            UsageError: pyarrow does not know the URI's scheme, or it is malformed.
        """
        if "://" not in text:
            return cls(LOCAL_FILESYSTEM, os.path.abspath(text))
        try:
            filesystem, path = pafs.FileSystem.from_uri(text)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
            raise UsageError(f"{text}: {exc}") from exc
        return cls(filesystem, path.rstrip("/"))

    @property
    def is_local(self) -> bool:
        """On this machine's own filesystem, where names may be any bytes and folders may be links."""
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def join(self, relative: PurePath) -> str:
        if relative == PurePosixPath():
            return self.path
        return f"{self.path}/{relative.as_posix()}" if self.path else relative.as_posix()

    def is_folder(self) -> bool:
        if self.is_local:
            return os.path.isdir(self.path)
        return not self.path or self.filesystem.get_file_info(self.path).type == pafs.FileType.Directory

    def listing(self, folder: PurePosixPath) -> tuple[list[str], list[str]]:
        """The names of the files and of the folders in ``folder`` (relative to this one); none if it is missing.

        Local folders are read with ``os.scandir``, which gives any name (pyarrow's
        listing fails on a name that is not UTF-8) and follows links.
        """
        files, folders = [], []
        if self.is_local:
            try:
                with os.scandir(self.join(folder)) as entries:
                    for entry in entries:
                        try:
                            if entry.is_dir():
                                folders.append(entry.name)
                            elif entry.is_file():
                                files.append(entry.name)
                        except OSError:  # vanished, or a link that cannot be followed
                            continue
            except (FileNotFoundError, NotADirectoryError):
                pass
            return files, folders
        selector = pafs.FileSelector(self.join(folder), recursive=False, allow_not_found=True)
        for info in self.filesystem.get_file_info(selector):
            if info.type == pafs.FileType.File:
                files.append(info.base_name)
            elif info.type == pafs.FileType.Directory:
                folders.append(info.base_name)
        return files, folders

    def contains(self, other: "Location") -> bool:
        """Whether ``other`` is this folder or inside it, on the same filesystem."""
        if not self.filesystem.equals(other.filesystem):
            return False
        return not self.path or PurePosixPath(other.path).is_relative_to(self.path)


def _identity(path: str) -> tuple[int, int] | None:
    """A local folder's identity, whatever name (link) it is reached by; None if it is gone."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def walk(source: Location, excluded: Location, tally: Tally) -> Iterator[tuple[PurePosixPath, list[str]]]:
    """Every folder under ``source`` once, with its files' names: in path order, a folder's files first.

    Hidden folders (a name starting with ".") are not walked, and ``excluded`` (the
    output folder) neither. Links are followed, to files and to folders, but each
    folder is walked once, under the first name the walk meets it by: a link to a folder
    walked already (a loop back to an ancestor, or a second name of a folder) is cut,
    and counted in ``tally.links_cut``. Only local folders have links.

    Yields:
        (a folder relative to ``source``, the sorted names of its files, hidden ones included).
    """
    walked = set()
    if excluded.is_local and source.is_local and (identity := _identity(excluded.path)) is not None:
        walked.add(identity)
    skipped_path = None
    if source.contains(excluded):
        skipped_path = PurePosixPath(excluded.path)
        skipped_path = skipped_path.relative_to(source.path) if source.path else skipped_path
    pending = [PurePosixPath()]
    while pending:
        folder = pending.pop()
        if folder == skipped_path:
            continue
        if source.is_local:
            identity = _identity(source.join(folder))
            if identity in walked:
                tally.links_cut += 1
                continue
            walked.add(identity)
        try:
            files, folders = source.listing(folder)
        except OSError as exc:  # no permission, a store that does not answer: its photos are failures
            tally.fail(folder, f"io: the folder cannot be listed: {exc}")
            continue
        yield folder, sorted(files)
        # Popped last-in first-out: pushed in reverse, so walked in path order.
        pending += [folder / name for name in sorted(folders, reverse=True) if not name.startswith(".")]


@dataclass(frozen=True)
class Planned:
    """One input to do: its path under INPUT_DIR, its output's under OUTPUT_DIR."""

    relative: PurePosixPath
    output: PurePosixPath


def plan(source: Location, target: Location, format: str, overwrite: bool, tally: Tally) -> Iterator[Planned]:
    """The photos and clips under ``source`` to do, in ``walk``'s order, as the walk finds them.

    Streamed: it holds one folder's names at a time, never the whole listing. Files
    without an image or video suffix are counted in ``tally.ignored``, existing outputs
    in ``tally.skipped`` (unless ``overwrite``; each output folder is listed once, not
    asked about file by file: on object stores a question costs a request). These
    become failures in ``tally``: a name that is not UTF-8 (its output could not be
    named, nor its path handed to pyarrow), and the second of two photos that would
    share an output name (``x.jpg`` and ``x.png``).

    Raises:
        UsageError: ``source`` is not a folder (raised at once, before the walk).
    """
    if not source.is_folder():
        raise UsageError(f"INPUT_DIR {source.path} is not a folder")
    return _planned(source, target, SUFFIX_BY_FORMAT[format], overwrite, tally)


def _planned(source: Location, target: Location, suffix: str, overwrite: bool, tally: Tally) -> Iterator[Planned]:
    for folder, names in walk(source, target, tally):
        existing = set() if overwrite else set(target.listing(folder)[0])
        owners: dict[str, str] = {}
        for name in names:
            if name.startswith("."):
                continue
            relative = folder / name
            if videos.is_video(relative):
                output = name  # a clip keeps its container, which holds the sound it came with
            elif relative.suffix.lower() in INPUT_SUFFIXES:
                output = relative.with_suffix(suffix).name
            else:
                tally.ignored += 1
                continue
            if not is_utf8(relative):
                tally.fail(relative, "its name is not UTF-8: rename it (the bytes that are not are shown as \\x escapes)")
            elif output in owners:
                tally.fail(relative, f"its output {output} is already the output of {shown(folder / owners[output])}")
            elif not overwrite and output in existing:
                owners[output] = name
                tally.skipped += 1
            else:
                owners[output] = name
                yield Planned(relative, folder / output)


# A temporary's name (``partial_name``), the output's name in it.
PARTIAL_NAME = re.compile(r"\.(?P<output>.+)\.\d+\.partial")


def partial_name(name: str) -> str:
    """The temporary ``write_atomic`` writes the output ``name`` to: hidden, naming this process."""
    return f".{name}.{os.getpid()}.partial"


def write_atomic(filesystem: pafs.FileSystem, target: str, data: bytes) -> None:
    """Writes a temporary file beside ``target``, then renames it over ``target``.

    The temporary name is hidden (``select`` leaves it out) and names the process, so
    a retried writer in another process never writes into the same temporary.
    """
    parent, _, name = target.rpartition("/")
    if parent:
        filesystem.create_dir(parent, recursive=True)
    temporary = f"{parent}/{partial_name(name)}" if parent else partial_name(name)
    try:
        with filesystem.open_output_stream(temporary) as stream:
            stream.write(data)
        filesystem.move(temporary, target)
    except BaseException:
        if filesystem.get_file_info(temporary).type != pafs.FileType.NotFound:
            filesystem.delete_file(temporary)
        raise


def remove_partials(target: Location, outputs: list[PurePosixPath]) -> list[PurePosixPath]:
    """Deletes the temporaries of ``outputs`` that writers killed mid-write left behind.

    A lost Ray worker dies between its write and its rename while the run goes on
    without it; the photo is written again by a retry, under another temporary name.
    Only the folders of ``outputs`` are listed, each once.

    Returns:
        The temporaries deleted, relative to ``target``.
    """
    left = []
    for folder in sorted({output.parent for output in outputs}):
        names = {output.name for output in outputs if output.parent == folder}
        left += [folder / name for name in sorted(target.listing(folder)[0])
                 if (match := PARTIAL_NAME.fullmatch(name)) and match["output"] in names]
    for path in left:
        target.filesystem.delete_file(target.join(path))
    return left


def record(tally: Tally, bar: tqdm, relative: PurePath, error: str | None = None, status: int | None = None) -> None:
    """Counts one finished photo, done or failed (with its error and HTTP status), on the bar too."""
    if error is None:
        tally.done += 1
    else:
        tally.fail(relative, error, status)
        bar.write(f"failed: {shown(relative)}: {error}")
    bar.update(1)
    bar.set_postfix(done=tally.done, failed=len(tally.failures), refresh=False)


def report_listing(tally: Tally) -> None:
    """Says what the walk left out: files that are no photos, links it did not follow."""
    if tally.ignored:
        known = sorted(INPUT_SUFFIXES | videos.VIDEO_SUFFIXES)
        print(f"ignored {tally.ignored} files without an image or video suffix ({', '.join(known)})")
    if tally.links_cut:
        print(f"did not follow {tally.links_cut} links to folders walked already (loops, second names): "
              f"each folder is done once")
