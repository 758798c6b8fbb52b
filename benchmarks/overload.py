"""Overload: open-loop arrivals far beyond capacity; goodput near capacity, refusals fast.

    python -m benchmarks.overload                       # 512 px, 20 s at 10x capacity
    python -m benchmarks.overload --load 5 --seconds 30 --side 768

Deploys serve_config.yaml in-process, warms it up, measures its capacity (images per
second, closed loop at ``--concurrency``), then sends Poisson arrivals at ``--load``
times that rate for ``--seconds``, each request on its own connection as independent
users would (open loop: nobody waits for an answer before the next arrives). Reports
goodput (200s answered within the window, per second) as a share of capacity, the
time to each answer by status (a 503 should cost well under a second: admission is
decided before the body is read), and any 504 or dropped request. Goodput counts the
200s answered within the timeout, per second from the first arrival to the last of them:
admitted images are still being drawn when arrivals stop.
"""

import argparse
import asyncio
import random
import sys
import time
from collections import defaultdict
from urllib.parse import urlsplit

import httpx

from benchmarks import common

CARTOONIZE = "/v1/cartoonize"


async def closed_loop(url: str, body: bytes, concurrency: int, seconds: float) -> float:
    """Images per second answered 200 with ``concurrency`` clients each sending back to back."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            if (await client.post(CARTOONIZE, content=body)).status_code == 200:
                done += 1

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def post_once(host: str, port: int, request: bytes) -> int:
    """Sends one prepared request on a connection of its own; the answer's status, 0 if none.

    Raw asyncio streams, not httpx: the client shares this machine's cores with the
    service, and httpx spent 10-15 ms of CPU per request on a new connection, as much
    as Serve's proxy (measured with /proc CPU times), which the service would then
    lose to the benchmark. The whole request is handed to the transport at once, and
    the answer read meanwhile: a refusal comes back before the body is read.
    """
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0
    try:
        writer.write(request)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        return int(status_line.split()[1])
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
        return 0
    finally:
        writer.close()


async def open_loop(url: str, body: bytes, rate: float, seconds: float) -> list[tuple[float, int, float]]:
    """(sent at, status, seconds to the answer) of Poisson arrivals at ``rate``; status 0 = no answer."""
    parts = urlsplit(url)
    request = (f"POST {CARTOONIZE} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/octet-stream\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    outcomes: list[tuple[float, int, float]] = []

    async def one(sent_at: float) -> None:
        status = await post_once(parts.hostname, parts.port, request)
        outcomes.append((sent_at, status, time.perf_counter() - sent_at))

    tasks, start = [], time.perf_counter()
    next_at = start
    while next_at < start + seconds:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        tasks.append(asyncio.create_task(one(time.perf_counter())))
        next_at += random.expovariate(rate)
    await asyncio.gather(*tasks)
    return [(sent_at - start, status, took) for sent_at, status, took in outcomes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--load", type=float, default=10.0, help="arrival rate as a multiple of capacity")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long arrivals go on")
    parser.add_argument("--concurrency", type=int, default=8, help="clients of the capacity measurement")
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--ray-cpus", type=int, default=None)
    parser.add_argument("--stage-niceness", type=int, default=None,
                        help="override the config's stage_niceness (the CPU stages' nice value)")
    parser.add_argument("--ingresses", type=int, default=None,
                        help="override the config's Ingress replicas (a fixed count)")
    parser.add_argument("--output", default=None, help="JSON results (default benchmarks/results/overload.json)")
    options = parser.parse_args(argv)

    photo = common.portraits([options.side])[0]  # the astronaut
    config = common.load_serve_config()
    app = config["applications"][0]
    if options.stage_niceness is not None:
        app.setdefault("args", {})["stage_niceness"] = options.stage_niceness
    ingress = next(deployment for deployment in app["deployments"] if deployment["name"] == "Ingress")
    if options.ingresses is not None:
        ingress["autoscaling_config"] = {"min_replicas": options.ingresses, "max_replicas": options.ingresses}
    ingresses = ingress["autoscaling_config"]["min_replicas"]
    timeout_s = float(common.app_args(config).get("request_timeout_s", 60))
    with common.served_graph(config, ray_cpus=options.ray_cpus) as url:
        asyncio.run(closed_loop(url, photo.data, 4, 5.0))  # warm-up
        capacity = asyncio.run(closed_loop(url, photo.data, options.concurrency, options.capacity_seconds))
        outcomes = asyncio.run(open_loop(url, photo.data, capacity * options.load, options.seconds))

    by_status = defaultdict(list)
    for _, status, took in outcomes:
        by_status[status].append(took)
    # Goodput: images answered 200 within the timeout, per second from the first arrival
    # to the last such answer (admitted images are still draining when arrivals stop).
    good = [sent_at + took for sent_at, status, took in outcomes if status == 200 and took <= timeout_s]
    goodput = len(good) / max(good) if good else 0.0
    rows = [[status, len(times), common.fmt(common.median(times), 3), common.fmt(common.percentile(times, 95), 3),
             common.fmt(max(times), 3)] for status, times in sorted(by_status.items())]
    print(f"{photo.label}; capacity {capacity:.2f} images/s (closed loop, c={options.concurrency}); "
          f"{len(outcomes)} arrivals in {options.seconds:.0f} s at {options.load:g}x capacity; "
          f"request_timeout_s {timeout_s:.0f}; {ingresses} Ingress replicas; {common.machine_description()}")
    print(common.markdown_table(["status", "count", "p50 s", "p95 s", "max s"], rows))
    print(f"\ngoodput {goodput:.2f} images/s (200s within the timeout, first arrival to last 200) = "
          f"{goodput / capacity:.0%} of capacity; "
          f"504: {len(by_status.get(504, []))}; no answer: {len(by_status.get(0, []))}")
    common.write_json(common.output_path(options.output, "overload.json"), {
        "side": options.side, "load": options.load, "seconds": options.seconds,
        "capacity_images_per_s": capacity, "goodput_images_per_s": goodput, "goodput_share": goodput / capacity,
        "request_timeout_s": timeout_s, "ingresses": ingresses, "stage_niceness": common.app_args(config).get("stage_niceness", 0),
        "machine": common.machine_description(), "commit": common.source_commit(),
        "by_status": {str(status): {"count": len(times), "p50_s": common.median(times),
                                    "p95_s": common.percentile(times, 95), "max_s": max(times)}
                      for status, times in sorted(by_status.items())},
    })
    return 1 if by_status.get(504) or by_status.get(0) else 0


if __name__ == "__main__":
    sys.exit(main())
