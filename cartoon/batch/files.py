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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
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
class Task:
    source: Path
    relative: Path  # of the source, under INPUT_DIR
    target: Path


@dataclass
class Tally:
    """What happened to every photo, filled in as photos finish.

    With a ``report`` open, each failure is written to it as one JSON line the moment
    it is known, so a run that is killed still leaves every failure it saw.
    """

    done: int = 0
    skipped: int = 0
    retries: int = 0
    failures: list[dict] = field(default_factory=list)
    report: TextIO | None = None

    def fail(self, relative: PurePath, error: str, status: int | None = None) -> None:
        failure = {"input": str(relative), "status": status, "error": error}
        self.failures.append(failure)
        if self.report is not None:
            self.report.write(json.dumps(failure) + "\n")
            self.report.flush()


def select(relatives: Iterable[PurePath], format: str, overwrite: bool, exists: Callable[[PurePath], bool],
           tally: Tally) -> tuple[list[tuple[PurePath, PurePath]], int]:
    """The photos to do among files found under INPUT_DIR; counts existing outputs in ``tally.skipped``.

    Hidden files and folders are left out; two photos that would share an output name
    (``x.jpg`` and ``x.png``) give the second one a failure in ``tally``.

    Args:
        relatives: every file's path relative to INPUT_DIR, in path order.
        format: the output format, which names the output suffix.
        overwrite: redo photos whose output exists.
        exists: whether an output exists, given its path relative to OUTPUT_DIR.
        tally: receives the skipped photos and the name clashes.

    Returns:
        (input, output) paths relative to INPUT_DIR and OUTPUT_DIR, and how many files
        were ignored for having neither an image nor a video suffix.
    """
    suffix = SUFFIX_BY_FORMAT[format]
    chosen, ignored, owners = [], 0, {}
    for relative in relatives:
        if any(part.startswith(".") for part in relative.parts):
            continue
        if videos.is_video(relative):
            output = relative  # a clip keeps its container, which holds the sound it came with
        elif relative.suffix.lower() in INPUT_SUFFIXES:
            output = relative.with_suffix(suffix)
        else:
            ignored += 1
            continue
        if output in owners:
            tally.fail(relative, f"its output {output.name} is already the output of {owners[output]}")
            continue
        owners[output] = relative
        if not overwrite and exists(output):
            tally.skipped += 1
            continue
        chosen.append((relative, output))
    return chosen, ignored


def plan(input_dir: Path, output_dir: Path, format: str, overwrite: bool, tally: Tally) -> tuple[list[Task], int]:
    """The photos of a local folder to do, in path order (``select``).

    Returns:
        The tasks, and how many files were ignored for not having an image suffix.
    """
    output_dir = output_dir.resolve()
    relatives = [
        source.relative_to(input_dir) for source in sorted(input_dir.rglob("*"))
        if source.is_file() and not source.resolve().is_relative_to(output_dir)
    ]
    chosen, ignored = select(relatives, format, overwrite, lambda output: (output_dir / output).exists(), tally)
    return [Task(input_dir / relative, relative, output_dir / output) for relative, output in chosen], ignored


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
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise UsageError(f"{text}: {exc}") from exc
        return cls(filesystem, path.rstrip("/"))

    def join(self, relative: PurePath) -> str:
        return f"{self.path}/{relative.as_posix()}" if self.path else relative.as_posix()

    def files(self) -> list[PurePosixPath]:
        """Every file under the folder, relative to it, in path order; none if it does not exist."""
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        root = PurePosixPath(self.path)
        return sorted(
            PurePosixPath(info.path).relative_to(root) if self.path else PurePosixPath(info.path)
            for info in self.filesystem.get_file_info(selector) if info.type == pafs.FileType.File
        )

    def contains(self, other: "Location") -> bool:
        """Whether ``other`` is this folder or inside it, on the same filesystem."""
        if not self.filesystem.equals(other.filesystem):
            return False
        return not self.path or PurePosixPath(other.path).is_relative_to(self.path)


def plan_location(source: Location, target: Location, format: str, overwrite: bool,
                  tally: Tally) -> tuple[list[tuple[PurePosixPath, PurePosixPath]], int]:
    """The photos under ``source`` to do, in path order (``select``): local or remote folders alike.

    The output folder is listed once, not asked about file by file: on object stores a
    question costs a request.

    Raises:
        UsageError: ``source`` is not a folder.
    """
    if source.path and source.filesystem.get_file_info(source.path).type != pafs.FileType.Directory:
        raise UsageError(f"INPUT_DIR {source.path} is not a folder")
    relatives = source.files()
    if source.contains(target):
        inner = PurePosixPath(target.path)
        inner = inner.relative_to(source.path) if source.path else inner
        relatives = [relative for relative in relatives if not relative.is_relative_to(inner)]
    existing = set(target.files()) if not overwrite else set()
    return select(relatives, format, overwrite, existing.__contains__, tally)


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
    One listing of the folder, as at the start.

    Returns:
        The temporaries deleted, relative to ``target``.
    """
    planned = set(outputs)
    left = [path for path in target.files()
            if (match := PARTIAL_NAME.fullmatch(path.name)) and path.parent / match["output"] in planned]
    for path in left:
        target.filesystem.delete_file(target.join(path))
    return left


def record(tally: Tally, bar: tqdm, relative: PurePath, error: str | None = None, status: int | None = None) -> None:
    """Counts one finished photo, done or failed (with its error and HTTP status), on the bar too."""
    if error is None:
        tally.done += 1
    else:
        tally.fail(relative, error, status)
        bar.write(f"failed: {relative}: {error}")
    bar.update(1)
    bar.set_postfix(done=tally.done, failed=len(tally.failures), refresh=False)


def report_ignored(ignored: int) -> None:
    if ignored:
        known = sorted(INPUT_SUFFIXES | videos.VIDEO_SUFFIXES)
        print(f"ignored {ignored} files without an image or video suffix ({', '.join(known)})")
