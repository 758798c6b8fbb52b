"""``cartoonize-batch --engine http``: photos through the service's HTTP API, or in this process.

With ``--url`` one request per photo, several in flight, so the service batches them;
without it, the same pipeline in this process, one photo at a time. Clips go through the
service's jobs API (``cartoon.batch.videos``).
"""

import argparse
import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from tqdm import tqdm

from cartoon.batch import videos
from cartoon.batch.files import Failure, Location, Planned, Tally, UsageError, plan, record, report_listing, write_atomic
from cartoon.errors import CartoonError, WeightsError
from cartoon.image.pipeline import Options, Pipeline
from cartoon.image.styles import DEFAULT_STYLES_DIR, StyleRegistry
from cartoon.retry import backoff_s

RETRIED_STATUSES = {503, 504}
MAX_ATTEMPTS = 8  # per photo: the first try and up to 7 retries
API_KEY_VARIABLE = "CARTOON_API_KEY"


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
    """Cartoonizes in this process with ``cartoon.image.pipeline.Pipeline``, one photo at a time."""

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


def _read(source: Location, relative) -> bytes:
    with source.filesystem.open_input_stream(source.join(relative)) as stream:
        return stream.read()


async def _run(backend, tasks: list[Planned], source: Location, target: Location, concurrency: int, tally: Tally,
               bar: tqdm) -> None:
    queue: asyncio.Queue[Planned] = asyncio.Queue()
    for task in tasks:
        queue.put_nowait(task)

    async def worker() -> None:
        while not queue.empty():
            task = queue.get_nowait()
            try:
                data = await asyncio.to_thread(_read, source, task.relative)
                if videos.is_video(task.relative):
                    output = await videos.cartoonize(backend, data, task.relative.suffix, with_retries, tally)
                else:
                    output = await with_retries(lambda: backend.cartoonize(data), tally)
                await asyncio.to_thread(write_atomic, target.filesystem, target.join(task.output), output)
                record(tally, bar, task.relative)
            except (Failure, videos.JobError, OSError) as exc:
                record(tally, bar, task.relative, str(exc), getattr(exc, "status", None))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run(args: argparse.Namespace, options: Options, tally: Tally, started: list[float]) -> None:
    """Cartoonizes the folder ``args.input_dir`` into ``args.output``: local paths or pyarrow URIs, as with Ray.

    Raises:
        UsageError: no such folder, an unknown URI scheme, no service, an unknown style.
    """
    source, target = Location.parse(args.input_dir), Location.parse(args.output)
    planned = plan(source, target, options.format, args.overwrite, tally)
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
        tasks = list(planned)
        report_listing(tally)
        started.append(time.perf_counter())
        with tqdm(total=len(tasks), unit="img", dynamic_ncols=True) as bar:
            await _run(backend, tasks, source, target, args.concurrency, tally, bar)
    finally:
        await backend.close()
