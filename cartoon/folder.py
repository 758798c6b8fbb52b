"""``cartoonize-batch INPUT_DIR -o OUTPUT_DIR``: cartoonize every photo of a folder tree.

Through the service (``--url``: one request per photo, several in flight, so the
service batches them), without ``--url`` in this process with the same pipeline, or
with ``--engine ray`` through Ray Data on a Ray cluster (``cartoon.batch_ray``), where
the folders may also be pyarrow filesystem URIs (s3://, gs://).
The output tree mirrors the input tree and keeps each file's stem; each output is
written to a temporary file and renamed, so an output that exists is complete, and a
stopped run resumes where it stopped (existing outputs are skipped unless
``--overwrite``).

Exit codes: 0 all done, 1 some failed, 2 usage error, 130 interrupted (Ctrl-C).
"""

import argparse
import asyncio
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import TextIO

import httpx
import pyarrow as pa
import pyarrow.fs as pafs
from tqdm import tqdm

from cartoon import folder_video
from cartoon.constants import UNET_STRIDE
from cartoon.errors import CartoonError, WeightsError
from cartoon.images import INPUT_SUFFIXES, SUFFIX_BY_FORMAT
from cartoon.pipeline import Options, Pipeline, PipelineSettings
from cartoon.retry import backoff_s
from cartoon.styles import DEFAULT_STYLES_DIR, StyleRegistry

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
RETRIED_STATUSES = {503, 504}
MAX_ATTEMPTS = 8  # per photo: the first try and up to 7 retries
API_KEY_VARIABLE = "CARTOON_API_KEY"
LOCAL_FILESYSTEM = pafs.LocalFileSystem()
# How --engine ray lays the stages out on the cluster (cartoon.batch_ray).
RAY_LAYOUTS = ("auto", "staged", "whole")


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
        if folder_video.is_video(relative):
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


class ServiceBackend:
    """Cartoonizes through the HTTP API of a running service."""

    def __init__(self, url: str, options: Options, concurrency: int):
        self.url = url.rstrip("/")
        self.params = {"format": options.format, "strength": str(options.strength)}
        if options.style:
            self.params["style"] = options.style
        if options.max_side:
            self.params["max_side"] = str(options.max_side)
        headers = {}
        if os.environ.get(API_KEY_VARIABLE):
            headers["Authorization"] = f"Bearer {os.environ[API_KEY_VARIABLE]}"
        # The service answers 504 itself after its request timeout (60 s by default).
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(180.0, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency),
        )

    async def check(self, style: str | None) -> None:
        """Fails early on what would fail every photo: no service, no key, an unknown style."""
        response = await self.send("GET", "/v1/styles")
        offered = [entry["name"] for entry in response.json()["styles"]]
        if style and style not in offered:
            raise UsageError(f"unknown style {style!r}; the service offers {', '.join(offered)}")

    async def send(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = await self.client.request(method, f"{self.url}{path}", **kwargs)
        except httpx.TransportError as exc:
            raise Failure(f"no answer from {self.url}: {exc!r}", retryable=True) from exc
        if response.is_success:
            return response
        try:
            error = response.json()["error"]
            message = f"{response.status_code} {error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            message = f"{response.status_code}: {response.text[:200]}"
        if response.status_code == 401:
            raise UsageError(f"the service wants an API key: set {API_KEY_VARIABLE} ({message})")
        retry_after = response.headers.get("retry-after", "")
        raise Failure(
            message,
            status=response.status_code,
            retryable=response.status_code in RETRIED_STATUSES,
            retry_after=float(retry_after) if retry_after.isdigit() else None,
        )

    async def cartoonize(self, data: bytes) -> bytes:
        response = await self.send(
            "POST", "/v1/cartoonize", params=self.params, content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return response.content

    async def close(self) -> None:
        await self.client.aclose()


class LocalBackend:
    """Cartoonizes in this process with ``cartoon.pipeline.Pipeline``, one photo at a time."""

    def __init__(self, options: Options):
        self.options = options
        self.pipeline = Pipeline(StyleRegistry.from_directory(DEFAULT_STYLES_DIR))
        self.executor = ThreadPoolExecutor(max_workers=1)  # one model, one photo at a time

    async def check(self, style: str | None) -> None:
        try:
            self.pipeline.stylizer(style)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from exc

    def _run(self, data: bytes) -> bytes:
        try:
            return self.pipeline(data, self.options).data
        except CartoonError as exc:
            raise Failure(f"{exc.code}: {exc}") from exc

    async def cartoonize(self, data: bytes) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._run, data)

    async def close(self) -> None:
        self.executor.shutdown(wait=True)


async def with_retries(send, tally: Tally):
    """What ``send()`` (a coroutine function) returns, retried on retryable failures."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            return await send()
        except Failure as failure:
            if not failure.retryable or attempt == MAX_ATTEMPTS - 1:
                raise
            tally.retries += 1
            await asyncio.sleep(backoff_s(attempt, failure.retry_after))
    raise AssertionError("unreachable: the last attempt returns or raises")


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
        known = sorted(INPUT_SUFFIXES | folder_video.VIDEO_SUFFIXES)
        print(f"ignored {ignored} files without an image or video suffix ({', '.join(known)})")


async def _run(backend, tasks: list[Task], concurrency: int, tally: Tally, bar: tqdm) -> None:
    queue: asyncio.Queue[Task] = asyncio.Queue()
    for task in tasks:
        queue.put_nowait(task)

    async def worker() -> None:
        while not queue.empty():
            task = queue.get_nowait()
            try:
                data = await asyncio.to_thread(task.source.read_bytes)
                if folder_video.is_video(task.source):
                    output = await folder_video.cartoonize(backend, data, task.source.suffix, with_retries, tally)
                else:
                    output = await with_retries(lambda: backend.cartoonize(data), tally)
                await asyncio.to_thread(write_atomic, LOCAL_FILESYSTEM, str(task.target), output)
                record(tally, bar, task.relative)
            except (Failure, folder_video.JobError, OSError) as exc:
                record(tally, bar, task.relative, str(exc), getattr(exc, "status", None))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _main(args: argparse.Namespace, options: Options, tally: Tally, started: list[float]) -> None:
    if args.url:
        backend = ServiceBackend(args.url, options, args.concurrency)
    else:
        try:
            backend = LocalBackend(options)
        except WeightsError as exc:
            raise UsageError(str(exc)) from exc
    try:
        for attempt in range(MAX_ATTEMPTS):
            try:
                await backend.check(options.style)
                break
            except Failure as failure:
                if not failure.retryable or attempt == MAX_ATTEMPTS - 1:
                    raise UsageError(f"the service cannot be used: {failure}") from failure
                await asyncio.sleep(backoff_s(attempt, failure.retry_after))
        tasks, ignored = plan(Path(args.input_dir), Path(args.output), options.format, args.overwrite, tally)
        report_ignored(ignored)
        started.append(time.perf_counter())
        with tqdm(total=len(tasks), unit="img", dynamic_ncols=True) as bar:
            await _run(backend, tasks, args.concurrency, tally, bar)
    finally:
        await backend.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cartoonize-batch",
        description="Cartoonize every photo under INPUT_DIR into OUTPUT_DIR, mirroring the folder tree.",
        epilog=f"Exit codes: 0 all done, 1 some failed, 2 usage error, 130 interrupted. "
               f"A service that requires an API key gets it from ${API_KEY_VARIABLE}.",
    )
    parser.add_argument("input_dir", metavar="INPUT_DIR",
                        help="folder of photos (searched recursively); with --engine ray also a URI (s3://, gs://, file://)")
    parser.add_argument("-o", "--output", metavar="OUTPUT_DIR", required=True,
                        help="where the cartoons go, same tree and stems; with --engine ray also a URI")
    parser.add_argument("--engine", choices=("http", "ray"), default="http",
                        help="http (default): through the service at --url, or in this process without it; "
                             "ray: Ray Data on a Ray cluster")
    parser.add_argument("--url", help="the service, e.g. http://127.0.0.1:8000; without it: in this process")
    parser.add_argument("--style", help="style name (default: the service's default)")
    parser.add_argument("--strength", type=float, default=1.0, help="0 = the photo, 1 = full cartoon (default 1)")
    parser.add_argument("--format", choices=sorted(SUFFIX_BY_FORMAT), default="png", help="output format")
    parser.add_argument("--max-side", type=int, help="cap on the output's long side (only shrinks)")
    parser.add_argument("--concurrency", type=int, default=4, help="photos in flight at once (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="redo photos whose output exists")
    parser.add_argument("--report", type=Path,
                        help="write each failure to this file as a JSON line as it happens, and the summary last")
    ray = parser.add_argument_group("--engine ray")
    ray.add_argument("--address", help="the Ray cluster (auto: the one this machine belongs to); "
                                       "without it: a Ray of this machine's own, started and stopped here")
    ray.add_argument("--layout", choices=RAY_LAYOUTS, default="auto",
                     help="staged: decode/align tasks, UNet actors, compose tasks; whole: each actor takes "
                          "photos from file to file (default auto: staged with --gpus-per-actor, else whole)")
    ray.add_argument("--unet-actors", type=int,
                     help="actors in the pool (default, from the cluster when the run starts: one per "
                          "--gpus-per-actor of its GPUs; whole photos on CPUs: one per --cpus-per-actor of its "
                          "CPUs and per 2 GiB of its memory; staged on CPUs: 1)")
    ray.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per UNet actor (default 0: CPU)")
    ray.add_argument("--cpus-per-actor", type=float, default=1.0,
                     help="logical CPUs per UNet actor, its torch threads on a CPU (default 1)")
    ray.add_argument("--cpus-per-task", type=float, default=1.0,
                     help="logical CPUs per decode/align or compose/encode task of the staged layout (default 1)")
    ray.add_argument("--batch-size", type=int, default=4,
                     help="photos per UNet actor call; their pieces form its batches (default 4)")
    ray.add_argument("--tile", type=int, default=0,
                     help="background tile side, as the served tile knob (0: whole background; 384 on a GPU)")
    return parser


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    if args.engine == "http" and not Path(args.input_dir).is_dir():
        parser.error(f"INPUT_DIR {args.input_dir} is not a folder")
    if args.engine == "ray" and args.url:
        parser.error("--url is for --engine http; --engine ray runs on the Ray cluster of --address")
    too_few_actors = args.unet_actors is not None and args.unet_actors < 1
    if too_few_actors or args.batch_size < 1 or args.cpus_per_task <= 0 or min(args.cpus_per_actor, args.gpus_per_actor) < 0:
        parser.error("--unet-actors and --batch-size must be at least 1, --cpus-per-task above 0, "
                     "--cpus-per-actor and --gpus-per-actor at least 0")
    if args.tile and (args.tile % UNET_STRIDE or args.tile <= 2 * PipelineSettings.halo):
        parser.error(f"--tile must be 0 or a multiple of {UNET_STRIDE} above {2 * PipelineSettings.halo}")
    if not 0.0 <= args.strength <= 1.0:
        parser.error("--strength must be within 0..1")
    if args.max_side is not None and args.max_side < 16:
        parser.error("--max-side must be at least 16")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.url and not args.url.startswith(("http://", "https://")):
        parser.error("--url must start with http:// or https://")
    return Options(style=args.style, strength=args.strength, format=args.format, max_side=args.max_side)


def _summarize(args: argparse.Namespace, tally: Tally, started: list[float], interrupted: bool) -> None:
    elapsed = time.perf_counter() - started[0] if started else 0.0
    rate = tally.done / elapsed if elapsed > 0 else 0.0
    print(
        f"{'interrupted: ' if interrupted else ''}done {tally.done}, skipped {tally.skipped}, "
        f"failed {len(tally.failures)}; {rate:.2f} images/s over {elapsed:.1f} s; retries {tally.retries}"
    )
    for failure in tally.failures:
        print(f"  failed: {failure['input']}: {failure['error']}")
    if tally.report is not None:
        summary = {"done": tally.done, "skipped": tally.skipped, "failed": len(tally.failures),
                   "retries": tally.retries, "interrupted": interrupted}
        tally.report.write(json.dumps({"summary": summary}) + "\n")


def main(argv: list[str] | None = None) -> int:
    """The ``cartoonize-batch`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = _options(parser, args)
    tally, started = Tally(), []
    if not args.report:
        return _run_engine(args, options, tally, started)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    with args.report.open("w", encoding="utf-8") as tally.report:
        return _run_engine(args, options, tally, started)


def _run_engine(args: argparse.Namespace, options: Options, tally: Tally, started: list[float]) -> int:
    """Runs the chosen engine and summarizes; returns the exit code."""
    try:
        if args.engine == "ray":
            from cartoon import batch_ray  # Ray only for this engine: the HTTP mode starts without it

            batch_ray.main(args, options, tally, started)
        else:
            asyncio.run(_main(args, options, tally, started))
    except UsageError as exc:
        print(f"cartoonize-batch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _summarize(args, tally, started, interrupted=True)
        return EXIT_INTERRUPTED
    _summarize(args, tally, started, interrupted=False)
    return EXIT_FAILED if tally.failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
