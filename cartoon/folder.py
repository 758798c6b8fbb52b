"""``cartoonize-batch INPUT_DIR -o OUTPUT_DIR``: cartoonize every photo of a folder tree.

Through the service (``--url``: one request per photo, several in flight, so the
service batches them) or, without ``--url``, in this process with the same pipeline.
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
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tqdm import tqdm

from cartoon import folder_video
from cartoon.errors import CartoonError, WeightsError
from cartoon.images import INPUT_SUFFIXES, SUFFIX_BY_FORMAT
from cartoon.pipeline import Options, Pipeline
from cartoon.retry import backoff_s
from cartoon.styles import DEFAULT_STYLES_DIR, StyleRegistry

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
RETRIED_STATUSES = {503, 504}
MAX_ATTEMPTS = 8  # per photo: the first try and up to 7 retries
API_KEY_VARIABLE = "CARTOON_API_KEY"


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
    """What happened to every photo, filled in as photos finish."""

    done: int = 0
    skipped: int = 0
    retries: int = 0
    failures: list[dict] = field(default_factory=list)


def plan(input_dir: Path, output_dir: Path, format: str, overwrite: bool, tally: Tally) -> tuple[list[Task], int]:
    """The photos to do, in path order; counts existing outputs in ``tally.skipped``.

    Returns:
        The tasks, and how many files were ignored for not having an image suffix.
    """
    suffix = SUFFIX_BY_FORMAT[format]
    output_dir = output_dir.resolve()
    tasks, ignored, owners = [], 0, {}
    for source in sorted(input_dir.rglob("*")):
        if not source.is_file() or source.resolve().is_relative_to(output_dir):
            continue
        relative = source.relative_to(input_dir)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if folder_video.is_video(source):
            target = output_dir / relative
        elif source.suffix.lower() in INPUT_SUFFIXES:
            target = output_dir / relative.with_suffix(suffix)
        else:
            ignored += 1
            continue
        if target in owners:
            tally.failures.append({
                "input": str(relative), "status": None,
                "error": f"its output {target.name} is already the output of {owners[target]}",
            })
            continue
        owners[target] = relative
        if target.exists() and not overwrite:
            tally.skipped += 1
            continue
        tasks.append(Task(source, relative, target))
    return tasks, ignored


def write_atomic(target: Path, data: bytes) -> None:
    """Writes a temporary file beside ``target``, then renames it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


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
                await asyncio.to_thread(write_atomic, task.target, output)
                tally.done += 1
            except (Failure, folder_video.JobError, OSError) as exc:
                tally.failures.append({
                    "input": str(task.relative), "status": getattr(exc, "status", None), "error": str(exc),
                })
                bar.write(f"failed: {task.relative}: {exc}")
            bar.update(1)
            bar.set_postfix(done=tally.done, failed=len(tally.failures), refresh=False)

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
        tasks, ignored = plan(args.input_dir, args.output, options.format, args.overwrite, tally)
        if ignored:
            known = sorted(INPUT_SUFFIXES | folder_video.VIDEO_SUFFIXES)
            print(f"ignored {ignored} files without an image or video suffix ({', '.join(known)})")
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
    parser.add_argument("input_dir", metavar="INPUT_DIR", type=Path, help="folder of photos (searched recursively)")
    parser.add_argument("-o", "--output", metavar="OUTPUT_DIR", type=Path, required=True,
                        help="where the cartoons go, same tree and stems")
    parser.add_argument("--url", help="the service, e.g. http://127.0.0.1:8000; without it: in this process")
    parser.add_argument("--style", help="style name (default: the service's default)")
    parser.add_argument("--strength", type=float, default=1.0, help="0 = the photo, 1 = full cartoon (default 1)")
    parser.add_argument("--format", choices=sorted(SUFFIX_BY_FORMAT), default="png", help="output format")
    parser.add_argument("--max-side", type=int, help="cap on the output's long side (only shrinks)")
    parser.add_argument("--concurrency", type=int, default=4, help="photos in flight at once (default 4)")
    parser.add_argument("--overwrite", action="store_true", help="redo photos whose output exists")
    parser.add_argument("--report", type=Path, help="write the failures to this JSON file")
    return parser


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    if not args.input_dir.is_dir():
        parser.error(f"INPUT_DIR {args.input_dir} is not a folder")
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
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "done": tally.done, "skipped": tally.skipped, "failed": len(tally.failures),
            "retries": tally.retries, "interrupted": interrupted, "failures": tally.failures,
        }
        args.report.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """The ``cartoonize-batch`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = _options(parser, args)
    tally, started = Tally(), []
    try:
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
